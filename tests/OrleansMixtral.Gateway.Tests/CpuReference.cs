using OrleansMixtral.Engine;
using OrleansMixtral.Engine.Cpu;
using OrleansMixtral.Model;
using OrleansMixtral.Tests;
using OrleansMixtral.Tokenization;

namespace OrleansMixtral.Gateway.Tests;

/// <summary>
/// References for what the gateway returns, computed apart from the cluster: the tiny model on a CPU backend of the
/// test's own (logits outside any engine), log-softmax written here, greedy continuations by argmax, and Hugging Face's
/// fixtures (tests/fixtures/tiny-mixtral).
/// </summary>
public sealed class CpuReference : IDisposable
{
    readonly CpuMixtralBackend _backend;
    readonly ModelRunner _runner;

    public CpuReference()
    {
        using var checkpoint = CheckpointDirectory.Open(RepoPaths.TinyModel);
        _backend = new CpuMixtralBackend(checkpoint, new CpuBackendOptions { KvCacheBytes = 64L << 20, MaxBatchTokens = 256 });
        _runner = new ModelRunner(_backend);
    }

    public static MistralTokenizer Tokenizer { get; } = MistralTokenizer.Load(RepoPaths.TinyModel);

    public void Dispose() => _backend.Dispose();

    public static double[] LogSoftmax(ReadOnlySpan<float> logits)
    {
        var max = double.NegativeInfinity;
        foreach (var v in logits) max = Math.Max(max, v);
        var sum = 0.0;
        foreach (var v in logits) sum += Math.Exp(v - max);
        var result = new double[logits.Length];
        for (var i = 0; i < logits.Length; i++) result[i] = logits[i] - max - Math.Log(sum);
        return result;
    }

    /// <summary>Log-probabilities of the token after <paramref name="tokens"/>.</summary>
    public double[] NextLogprobs(IReadOnlyList<int> tokens) => LogSoftmax(_runner.LastLogits(tokens));

    /// <summary>[p] = log-probabilities of the token after position p.</summary>
    public double[][] AllLogprobs(IReadOnlyList<int> tokens)
    {
        var result = new double[tokens.Count][];
        _runner.Run(tokens, allPositions: true, (pos, logits) => result[pos] = LogSoftmax(logits));
        return result;
    }

    /// <summary>The greedy continuation (argmax, first of equal maxima), <paramref name="count"/> tokens, EOS included.</summary>
    public int[] Greedy(IReadOnlyList<int> prompt, int count)
    {
        var tokens = new List<int>(prompt);
        for (var i = 0; i < count; i++)
        {
            var logits = _runner.LastLogits(tokens);
            tokens.Add(Engine.Sampling.Sampler.Argmax(logits));
        }
        return [.. tokens.Skip(prompt.Count)];
    }

    /// <summary>The <paramref name="k"/> largest values, best first.</summary>
    public static double[] Top(double[] logprobs, int k) => [.. logprobs.OrderByDescending(v => v).Take(k)];

    /// <summary>Hugging Face's prompt <paramref name="index"/> of prompts.json: its ids, and its chat messages (if a chat prompt).</summary>
    public static (int[] Ids, (string Role, string Content)[] Messages) HfPrompt(int index)
    {
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(RepoPaths.Fixtures, "tiny-mixtral", "prompts.json")));
        var p = doc.RootElement.GetProperty("prompts")[index];
        return ([.. p.GetProperty("ids").EnumerateArray().Select(i => i.GetInt32())],
            p.TryGetProperty("messages", out var m) ? [.. m.EnumerateArray().Select(x => (x.GetProperty("role").GetString()!, x.GetProperty("content").GetString()!))] : []);
    }

    /// <summary>Hugging Face's (transformers, fp32) logits after prompt <paramref name="index"/> (prompts 0, 1, 8, 10 have them).</summary>
    public static float[] HfLastLogits(int index)
    {
        using var file = SafeTensorsFile.Open(Path.Combine(RepoPaths.Fixtures, "tiny-mixtral", "last_logits.safetensors"));
        var name = $"prompt_{index}";
        var v = new float[file.Get(name).ElementCount];
        file.ReadAsFloat32(name, v);
        return v;
    }
}
