using OrleansMixtral.Engine;
using OrleansMixtral.Grains.Contracts;
using OrleansMixtral.Tokenization;

namespace OrleansMixtral.Grains;

/// <summary>
/// This silo's engine as the grains use it. The silo's host implements it (it chooses the backend and loads the model:
/// grains know no backend); a silo without a model (<see cref="MixtralSiloOptions.Engine"/> false) has one that never
/// serves, so its conversations run their turns on other silos' engines.
/// </summary>
public interface ISiloEngine
{
    /// <summary>The engine is loaded and takes requests (false while it loads, and always on a silo without a model).</summary>
    bool IsLoaded { get; }

    /// <summary>The engine's load, for routing and dashboards (<see cref="EngineLoad.State"/> says whether it serves).</summary>
    EngineLoad GetLoad();

    /// <summary>Why this engine should not take <paramref name="request"/> now (null: it should).</summary>
    string? BusyReason(EngineRequest request);

    /// <summary>Queues a turn. Throws <see cref="InvalidTurnException"/> or <see cref="EngineBusyException"/>.</summary>
    GenerationStream Submit(EngineRequest request);

    /// <summary>Stops a running turn at the engine's next step; false when it is not running here.</summary>
    bool Cancel(string conversationId, int turn);
}

/// <summary>
/// The served model's tokenizer and context length, which conversations render and fit their prompts with. On a silo
/// with an engine, the engine's own; on one without, read from the model directory (tokenizer.json, config.json).
/// </summary>
public interface ITokenizerService
{
    MistralTokenizer Tokenizer { get; }
    /// <summary>Prompt plus reply tokens the model takes.</summary>
    int ContextLength { get; }
}
