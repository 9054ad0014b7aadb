using OrleansMixtral.Client;

namespace OrleansMixtral.Cli.Tests;

/// <summary>
/// The chat's slash commands, the same for a local model and a cluster (<see cref="ChatRepl"/>; the cluster's side is in
/// the cluster tests): /help lists them, /history shows the conversation, /id, unknown commands named.
/// </summary>
public sealed class ChatCommandsTests
{
    [Fact]
    public void A_local_chat_has_the_cluster_chats_commands()
    {
        var r = Cli.RunWithInput("/help\nWhat is the capital of France?\n/history\n/id\n/bogus\n/reset\n/history\n/exit\nnot read\n",
            "chat", "--model", Cli.Model, "--system", "Be brief.", "--temperature", "0", "--max-tokens", "32", "--ignore-eos");
        Assert.True(r.ExitCode == 0, r.ToString());

        foreach (var (name, help) in ChatRepl.Commands) Assert.Contains($"{name,-9} {help}", r.Err);
        string reply = r.Out.TrimEnd('\n');
        Assert.Contains("[system] Be brief.\n[user] What is the capital of France?\n[assistant] " + reply + "\n", r.Err);
        Assert.Contains("(a local chat has no id", r.Err);
        Assert.Contains("unknown command /bogus (commands: /help, /history, /reset, /id, /exit)", r.Err);
        // after /reset only the system message is left
        Assert.EndsWith("(conversation cleared)\n[system] Be brief.\n", r.Err.Replace("\r", ""));
    }
}
