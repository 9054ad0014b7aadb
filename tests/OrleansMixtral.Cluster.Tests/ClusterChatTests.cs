using OrleansMixtral.Client;
using OrleansMixtral.Grains;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>The console chat over the cluster: multi-turn, streaming to a writer, resumable by conversation id.</summary>
[Collection(ClusterCollection.Name)]
public sealed class ClusterChatTests(ClusterFixture fixture)
{
    [Fact(Timeout = 60_000)]
    public async Task Chats_turn_by_turn_and_resumes_by_conversation_id()
    {
        var options = new TurnOptions { MaxTokens = 8, Temperature = 0 };
        var output = new StringWriter();
        var error = new StringWriter();
        var chat = new ClusterChat(fixture.Client, new StringReader("Hello\n/bogus\nTell me more\n/exit\nnot read\n"), output, error)
        {
            Options = options,
            SystemPrompt = "Be brief.",
        };
        Assert.Equal(ClusterChat.ExitOk, await chat.RunAsync());

        var err = error.ToString();
        var id = err.Split(' ', '\n')[1];
        var history = await fixture.Client.GetHistoryAsync(id);
        Assert.Equal(2, history.Turns);
        Assert.Equal("Be brief.", history.Messages[0].Content);
        Assert.Equal(history.Messages[2].Content + "\n" + history.Messages[4].Content + "\n", output.ToString());
        Assert.Contains("unknown command /bogus", err);
        Assert.Contains("tokens, first after", err);

        var resumed = new StringWriter();
        var chat2 = new ClusterChat(fixture.Client, new StringReader("/history\nAnd finally?\n"), new StringWriter(), resumed) { Options = options };
        Assert.Equal(ClusterChat.ExitOk, await chat2.RunAsync(id));
        Assert.Contains($"resuming conversation {id}: 2 turn(s)", resumed.ToString());
        Assert.Contains("[user] Tell me more", resumed.ToString());
        Assert.Equal(3, (await fixture.Client.GetHistoryAsync(id)).Turns);
    }
}
