using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Orleans;
using Orleans.TestingHost;
using OrleansMixtral.Cli;
using OrleansMixtral.Client.AI;
using OrleansMixtral.Engine;
using OrleansMixtral.Grains.Contracts;
using OrleansMixtral.Hosting;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Gateway.Tests;

/// <summary>
/// One request — a user message, a seed and a token limit, everything else left to the defaults — through each entry
/// point: the CLI's <c>generate --chat</c> (engine in process), HTTP, the IChatClient and <c>chat --cluster</c>'s session.
/// All four sample with <see cref="SamplingOptions"/>' defaults (temperature 1, top_p 1), so all give the ids the engine
/// gives that request with those options, and their text.
/// </summary>
public sealed class SamplingPathsTests : IAsyncLifetime
{
    const string Message = "Tell me about the old city.";
    const ulong Seed = 7;
    const int MaxTokens = 12;

    InProcessTestCluster _cluster = null!;
    WebApplication _gateway = null!;
    readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(60) };

    public async ValueTask InitializeAsync()
    {
        var builder = new InProcessTestClusterBuilder(1);
        builder.ConfigureSilo((_, silo) => silo.AddMixtral(GatewayFixture.SiloOptions()));
        builder.ConfigureSiloHost((_, host) => host.Services.PostConfigure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(5)));
        builder.ConfigureClient(client => client.AddMemoryStreams(TokenStreams.Provider));
        _cluster = builder.Build();
        await _cluster.DeployAsync();
        Uri url;
        (_gateway, url) = await GatewayFixture.StartGatewayAsync(_cluster.Client, []);
        _http.BaseAddress = url;
    }

    public async ValueTask DisposeAsync()
    {
        _http.Dispose();
        if (_gateway is not null)
        {
            await _gateway.StopAsync();
            await _gateway.DisposeAsync();
        }
        if (_cluster is not null) await _cluster.DisposeAsync();
    }

    [Fact(Timeout = 180_000)]
    public async Task The_same_request_gives_the_same_ids_through_every_entry_point()
    {
        // The reference: the silo's engine, given the chat template's ids and the options a user gets by naming only the
        // seed and the limit.
        var engine = _cluster.GetSiloServiceProvider(_cluster.Silos[0].SiloAddress).GetRequiredService<SiloEngineHost>();
        var tokenizer = engine.Tokenizer;
        var prompt = tokenizer.EncodeChat([new ChatMessage(ChatRole.User, Message)]);
        var options = new SamplingOptions { Seed = Seed, MaxTokens = MaxTokens };
        Assert.False(options.IsGreedy); // the defaults sample: the paths agree on them, not only on argmax
        var reference = await engine.Engine.Submit(new GenerationRequest(prompt, options)).ReadToEndAsync();
        var ids = reference.OutputTokens.ToArray();
        Assert.InRange(ids.Length, 1, MaxTokens);
        var text = tokenizer.Decode(ids);
        Assert.Equal(reference.Text, text);
        // the same request greedy differs: a path that fell back to greedy defaults would not match
        var greedy = await engine.Engine.Submit(new GenerationRequest(prompt, options with { Temperature = 0 })).ReadToEndAsync();
        Assert.NotEqual(ids, greedy.OutputTokens.ToArray());

        // 1. the CLI, engine in process: generate --chat, only --seed and --max-tokens given
        var cliOut = new StringWriter();
        var cliErr = new StringWriter();
        var code = CliApp.Run(["generate", "--model", RepoPaths.TinyModel, "--chat", "--prompt", Message,
            "--seed", Seed.ToString(), "--max-tokens", MaxTokens.ToString(), "--threads", "1"], new StringReader(""), cliOut, cliErr);
        Assert.True(code == 0, cliErr.ToString());
        Assert.Equal(text, cliOut.ToString().TrimEnd('\n'));

        // 2. HTTP, as an OpenAI client sends it; in a conversation, whose grain keeps the exact ids
        string httpConversation;
        using (var created = await _http.PostAsync("/v1/conversations", new StringContent("{}", Encoding.UTF8, "application/json")))
        {
            var createdJson = await created.Content.ReadAsStringAsync();
            Assert.True(created.IsSuccessStatusCode, createdJson);
            using var doc = JsonDocument.Parse(createdJson);
            httpConversation = doc.RootElement.GetProperty("id").GetString()!;
        }
        var body = JsonSerializer.Serialize(new
        {
            model = "tiny-mixtral",
            messages = new[] { new { role = "user", content = Message } },
            seed = Seed,
            max_tokens = MaxTokens,
            metadata = new { conversation_id = httpConversation },
        });
        using var response = await _http.PostAsync("/v1/chat/completions", new StringContent(body, Encoding.UTF8, "application/json"));
        var json = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, json);
        using (var doc = JsonDocument.Parse(json))
        {
            Assert.Equal(text, doc.RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
            Assert.Equal(ids.Length, doc.RootElement.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        }
        var grainKey = ConversationIds.GrainKey(ApiKeys.Local, response.Headers.GetValues(GatewayHost.ConversationHeader).Single())!;
        var stored = await StoredReplyIds(grainKey, prompt.Length);
        Assert.Equal(ids, stored);

        // 3. the IChatClient, only Seed and MaxOutputTokens set
        var services = new ServiceCollection();
        services.AddSingleton<IClusterClient>(_cluster.Client);
        services.AddMixtralChatClient(o => o.Model = RepoPaths.TinyModel);
        await using (var provider = services.BuildServiceProvider())
        {
            var chat = provider.GetRequiredService<IChatClient>();
            var reply = await chat.GetResponseAsync([new Microsoft.Extensions.AI.ChatMessage(Microsoft.Extensions.AI.ChatRole.User, Message)],
                new ChatOptions { Seed = (long)Seed, MaxOutputTokens = MaxTokens });
            Assert.Equal(text, reply.Text);
            Assert.Equal(ids.Length, reply.Usage!.OutputTokenCount);
        }

        // 4. chat --cluster's session (ClusterChat) with what the CLI's flags give for --seed and --max-tokens: the
        // options' defaults (the CLI's flag parsing is path 1's); a turn of a cluster conversation
        var chatOut = new StringWriter();
        var chatErr = new StringWriter();
        var clusterChat = new Client.ClusterChat(new Client.MixtralClient(_cluster.Client), new StringReader(Message + "\n/exit\n"), chatOut, chatErr)
        {
            Options = new SamplingOptions { Seed = Seed, MaxTokens = MaxTokens },
        };
        Assert.Equal(Client.ClusterChat.ExitOk, await clusterChat.RunAsync());
        Assert.Equal(text + "\n", chatOut.ToString());
        var conversation = chatErr.ToString().Split(' ', '\n')[1]; // "conversation ID …"
        Assert.Equal(ids, await StoredReplyIds(conversation, prompt.Length));
    }

    /// <summary>The generated ids of a one-turn conversation: its stored ids after the prompt, less the closing EOS.</summary>
    async Task<int[]> StoredReplyIds(string conversationId, int promptLength)
    {
        var tokens = await _cluster.Client.GetGrain<IConversationGrain>(conversationId).GetTokens();
        Assert.True(tokens.Length > promptLength, $"conversation {conversationId} holds {tokens.Length} tokens");
        return tokens[promptLength..^1];
    }
}
