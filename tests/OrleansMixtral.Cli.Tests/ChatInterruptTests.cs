using System.Text;

namespace OrleansMixtral.Cli.Tests;

/// <summary>
/// Ctrl+C in <c>mixtral chat</c> (raised here as the process's console handler raises it): during a reply it cancels the
/// reply and the chat goes on; again before the reply has ended, or at the prompt, it ends the chat (exit code 130).
/// </summary>
public sealed class ChatInterruptTests
{
    /// <summary>stdout that presses Ctrl+C <paramref name="presses"/> times when the first reply text arrives.</summary>
    sealed class InterruptingWriter(int presses) : StringWriter
    {
        public CliConsole? Console { get; set; }
        int _pressed;

        public override void Write(string? value)
        {
            base.Write(value);
            if (!string.IsNullOrEmpty(value) && value != Environment.NewLine && _pressed == 0)
                for (_pressed = 0; _pressed < presses; _pressed++) Console!.Interrupts.Raise();
        }
    }

    static (int Code, string Out, string Err) Chat(TextReader input, StringWriter output, params string[] args)
    {
        var error = new StringWriter();
        var console = new CliConsole(input, output, error);
        if (output is InterruptingWriter w) w.Console = console;
        int code = CliApp.Run(["chat", "--model", Cli.Model, .. args], console);
        return (code, output.ToString(), error.ToString());
    }

    [Fact]
    public void Ctrl_C_during_a_reply_cancels_it_and_the_next_message_is_answered()
    {
        var (code, output, error) = Chat(new StringReader("Tell me a very long story.\n/history\nHello\n"), new InterruptingWriter(1),
            "--temperature", "0", "--max-tokens", "600", "--ignore-eos");

        Assert.True(code == 0, error);
        Assert.Contains("(cancelled; the conversation is as it was before this message)", error);
        // the cancelled turn is not in the history; the next one ran whole
        Assert.Contains("(no messages yet)", error);
        Assert.Matches(@"\[600 tokens \(length\)", error);
        var replies = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, replies.Length);
        Assert.True(replies[0].Length < replies[1].Length / 4, $"the first reply should have been cut short: {replies[0].Length} vs {replies[1].Length} chars");
    }

    [Fact]
    public void A_second_Ctrl_C_before_the_reply_has_ended_ends_the_chat()
    {
        var (code, output, error) = Chat(new StringReader("Tell me a very long story.\nHello\n"), new InterruptingWriter(2),
            "--temperature", "0", "--max-tokens", "600", "--ignore-eos");

        Assert.Equal(CliApp.ExitInterrupted, code);
        Assert.Single(output.Split('\n', StringSplitOptions.RemoveEmptyEntries)); // "Hello" was never answered
        Assert.Contains("(cancelled;", error);
    }

    /// <summary>Input from a person who types nothing: a read that blocks (as a console's does) until the test ends.</summary>
    sealed class SilentReader : TextReader
    {
        public readonly ManualResetEventSlim Closed = new();
        public override string? ReadLine()
        {
            Closed.Wait();
            return null;
        }
    }

    [Fact]
    public async Task Ctrl_C_at_the_prompt_ends_the_chat()
    {
        var error = new StringWriter();
        var input = new SilentReader();
        using var close = new Finally(input.Closed.Set);
        var console = new CliConsole(input, new StringWriter(), error);
        var chat = Task.Run(() => CliApp.Run(["chat", "--model", Cli.Model], console));
        // the chat takes Ctrl+C once its model has loaded
        var waited = System.Diagnostics.Stopwatch.StartNew();
        while (!console.Interrupts.Raise() && waited.Elapsed < TimeSpan.FromSeconds(30)) await Task.Delay(50);
        Assert.Equal(CliApp.ExitInterrupted, await chat.WaitAsync(TimeSpan.FromSeconds(10)));
    }

    sealed class Finally(Action action) : IDisposable
    {
        public void Dispose() => action();
    }
}
