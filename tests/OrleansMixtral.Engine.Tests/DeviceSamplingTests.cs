using OrleansMixtral.Engine.Cpu;
using OrleansMixtral.Engine.Sampling;
using OrleansMixtral.Model;

namespace OrleansMixtral.Engine.Tests;

/// <summary>
/// The engine's side of sampling on the device (<see cref="IDeviceSampling"/>): which steps it is used for and which
/// draws it hands over. A CPU backend stands in for the device here, choosing with <see cref="Sampler.SampleWithDraw"/>;
/// the CUDA kernel itself is checked against that on a GPU (OrleansMixtral.Cuda.Tests).
/// </summary>
public sealed class DeviceSamplingTests
{
    /// <summary>The tiny model on the CPU, sampling "on the device" with the draws the engine passes.</summary>
    sealed class SamplingBackend(CpuMixtralBackend inner) : IModelBackend, IDeviceSampling
    {
        readonly Sampler _sampler = new(inner.Config.VocabSize);
        float[] _logits = [];
        public int DeviceSteps;
        public int HostSteps;

        public string Name => inner.Name;
        public MixtralConfig Config => inner.Config;
        public int KvBlockSize => inner.KvBlockSize;
        public int KvBlockCount => inner.KvBlockCount;
        public int MaxBatchTokens => inner.MaxBatchTokens;
        public RouterTrace? RouterTrace { get => inner.RouterTrace; set => inner.RouterTrace = value; }
        public void CopyKvBlock(int sourceBlock, int destinationBlock, int tokens) => inner.CopyKvBlock(sourceBlock, destinationBlock, tokens);
        public void Dispose() => inner.Dispose();

        public void Forward(ForwardBatch batch, Span<float> logits)
        {
            HostSteps++;
            inner.Forward(batch, logits);
        }

        public void ForwardAndSample(ForwardBatch batch, ReadOnlySpan<float> temperatures, ReadOnlySpan<double> uniforms, Span<int> tokens)
        {
            DeviceSteps++;
            var vocab = Config.VocabSize;
            if (_logits.Length < batch.LogitCount * vocab) _logits = new float[batch.LogitCount * vocab];
            inner.Forward(batch, _logits);
            for (var i = 0; i < batch.LogitCount; i++)
            {
                Assert.InRange(uniforms[i], 0.0, 1.0);
                tokens[i] = _sampler.SampleWithDraw(_logits.AsSpan(i * vocab, vocab), temperatures[i], uniforms[i]);
            }
        }
    }

    static readonly int[] Prompt = [1, 415, 2936, 9060, 285, 1142, 28705, 28770, 28723];

    static async Task<IReadOnlyList<int>> Generate(IModelBackend backend, params SamplingOptions[] requests)
    {
        await using var engine = new InferenceEngine(backend, TinyModel.Tokenizer);
        var results = await Task.WhenAll(requests.Select(p => engine.Submit(new GenerationRequest(Prompt, p)).ReadToEndAsync()));
        return results.SelectMany(r => r.OutputTokens.Append(-1)).ToList();
    }

    [Fact]
    public async Task A_seeded_request_gives_the_same_tokens_whether_the_host_or_the_device_samples()
    {
        SamplingOptions[] requests =
        [
            new() { Temperature = 0.9f, Seed = 7, MaxTokens = 24, IgnoreEos = true },
            new() { Temperature = 0f, MaxTokens = 24, IgnoreEos = true },
            new() { Temperature = 1.3f, Seed = 11, MaxTokens = 24, IgnoreEos = true },
        ];
        var host = await Generate(TinyModel.Backend(), requests);
        var device = new SamplingBackend(TinyModel.Backend());
        var viaDevice = await Generate(device, requests);
        Assert.Equal(host, viaDevice);
        Assert.True(device.DeviceSteps > 0 && device.HostSteps == 0, $"device steps {device.DeviceSteps}, host steps {device.HostSteps}");
        // the temperature rows really sampled: different seeds part from greedy within 24 tokens
        Assert.NotEqual(host.Take(24), host.Skip(25).Take(24));
    }

    [Fact]
    public async Task Top_k_or_top_p_in_the_batch_keeps_the_whole_step_on_the_host()
    {
        var device = new SamplingBackend(TinyModel.Backend());
        var host = await Generate(TinyModel.Backend(), new SamplingOptions { Temperature = 0.8f, TopP = 0.9f, Seed = 3, MaxTokens = 12, IgnoreEos = true });
        var viaDevice = await Generate(device, new SamplingOptions { Temperature = 0.8f, TopP = 0.9f, Seed = 3, MaxTokens = 12, IgnoreEos = true });
        Assert.Equal(host, viaDevice);
        Assert.Equal(0, device.DeviceSteps);
        Assert.True(device.HostSteps > 0);
    }

    [Fact]
    public async Task Logprobs_in_the_batch_keep_the_whole_step_on_the_host_with_the_same_tokens()
    {
        // logprobs come from the logits, so the engine takes the logits path for the steps of such a request. It is
        // submitted first and runs 4 tokens longer: the other, admitted with it or a step or two later (the engine's loop
        // may start a step between the two submissions), never has a step of its own, which would sample on the device.
        SamplingOptions[] requests =
        [
            new() { Temperature = 0.9f, Seed = 7, MaxTokens = 16, IgnoreEos = true, Logprobs = 2 },
            new() { Temperature = 1.1f, Seed = 5, MaxTokens = 12, IgnoreEos = true },
        ];
        var host = await Generate(TinyModel.Backend(), requests);
        var device = new SamplingBackend(TinyModel.Backend());
        var viaDevice = await Generate(device, requests);
        Assert.Equal(host, viaDevice);
        Assert.Equal(0, device.DeviceSteps);
        Assert.True(device.HostSteps > 0);

        // and without logprobs the same requests sample on the device again
        var plain = new SamplingBackend(TinyModel.Backend());
        Assert.Equal(host, await Generate(plain, [.. requests.Select(r => r with { Logprobs = null })]));
        Assert.True(plain.DeviceSteps > 0 && plain.HostSteps == 0);
    }

    [Fact]
    public void The_draw_picks_the_first_token_whose_cumulative_probability_passes_it()
    {
        // probabilities 0.1, 0.2, 0.3, 0.4 at temperature 1: cumulative 0.1, 0.3, 0.6, 1.0
        float[] logits = [0f, MathF.Log(2), MathF.Log(3), MathF.Log(4)];
        var sampler = new Sampler(4);
        Assert.Equal(0, sampler.SampleWithDraw(logits, 1f, 0.05));
        Assert.Equal(1, sampler.SampleWithDraw(logits, 1f, 0.29));
        Assert.Equal(2, sampler.SampleWithDraw(logits, 1f, 0.31));
        Assert.Equal(3, sampler.SampleWithDraw(logits, 1f, 0.99));
        Assert.Equal(3, sampler.SampleWithDraw(logits, 0f, 0.01)); // temperature 0: argmax, the draw unused
    }
}
