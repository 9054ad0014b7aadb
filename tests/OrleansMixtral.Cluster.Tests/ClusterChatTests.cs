using OrleansMixtral.Client;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>The console chat over the cluster: multi-turn, streaming to a writer, resumable by conversation id.</summary>
[Collection(ClusterCollection.Name)]
public sealed class ClusterChatTests(ClusterFixture fixture)
{
    [Fact(Timeout = 60_000)]
    public async Task Chats_turn_by_turn_and_resumes_by_conversation_id()
    {
        var options = new SamplingOptions { MaxTokens = 8, Temperature = 0 };
        var output = new StringWriter();
        var error = new StringWriter();
        var chat = new ClusterChat(fixture.Client, new StringReader("Hello\n/bogus\n/help\nTell me more\n/exit\nnot read\n"), output, error)
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
        Assert.Contains("unknown command /bogus (commands: /help, /history, /reset, /id, /exit)", err);
        foreach (var (name, help) in ChatRepl.Commands) Assert.Contains($"{name,-9} {help}", err); // the local chat's commands
        Assert.Contains("tokens, first after", err);

        var resumed = new StringWriter();
        var chat2 = new ClusterChat(fixture.Client, new StringReader("/history\nAnd finally?\n"), new StringWriter(), resumed) { Options = options };
        Assert.Equal(ClusterChat.ExitOk, await chat2.RunAsync(id));
        Assert.Contains($"resuming conversation {id}: 2 turn(s)", resumed.ToString());
        Assert.Contains("[user] Tell me more", resumed.ToString());
        Assert.Equal(3, (await fixture.Client.GetHistoryAsync(id)).Turns);
    }

    /// <summary>stdout that presses Ctrl+C when the first reply text arrives.</summary>
    sealed class InterruptingWriter(ChatInterrupts interrupts) : StringWriter
    {
        bool _pressed;

        public override void Write(string? value)
        {
            base.Write(value);
            if (!string.IsNullOrEmpty(value) && !_pressed) _pressed = !interrupts.Interrupt();
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task Ctrl_C_during_a_reply_cancels_the_turn_and_the_chat_goes_on()
    {
        using var interrupts = new ChatInterrupts();
        var output = new InterruptingWriter(interrupts);
        var error = new StringWriter();
        var chat = new ClusterChat(fixture.Client, new StringReader("Tell me a long story.\nHello\n"), output, error)
        {
            Options = new SamplingOptions { MaxTokens = 400, Temperature = 0, IgnoreEos = true },
            Interrupts = interrupts,
        };
        Assert.Equal(ClusterChat.ExitOk, await chat.RunAsync());

        var err = error.ToString();
        Assert.Contains("(cancelled: cancelled by the client; the conversation is as it was before this message)", err);
        var history = await fixture.Client.GetHistoryAsync(err.Split(' ', '\n')[1]);
        Assert.Equal(1, history.Turns);
        Assert.Equal("Hello", history.Messages[0].Content); // the cancelled turn is not in it
    }
}
