namespace OrleansMixtral.Cli.Tests;

public class GenerateTests
{
    public static TheoryData<int> GreedyPrompts => new(HfReference.GreedyContinuations.Select(g => g.Prompt));

    /// <summary>The CLI's arguments that give the prompt of prompts.json entry <paramref name="index"/>.</summary>
    static List<string> PromptArgs(int index)
    {
        HfReference.Prompt p = HfReference.Prompts.Value[index];
        if (p.Kind == "plain") return ["--prompt", p.Text!];
        // generate --chat takes one user turn, optionally after a system message
        var args = new List<string> { "--chat" };
        foreach ((string role, string content) in p.Messages)
        {
            if (role == "system") args.AddRange(["--system", content]);
            else if (role == "user") args.AddRange(["--prompt", content]);
            else throw new InvalidOperationException($"prompt {index} has a {role} turn; generate --chat takes one user turn");
        }
        return args;
    }

    [Theory]
    [MemberData(nameof(GreedyPrompts))]
    public void Greedy_output_is_the_Hugging_Face_continuation(int prompt)
    {
        HfReference.Greedy expected = HfReference.GreedyContinuations.Single(g => g.Prompt == prompt);
        var r = Cli.Run(["generate", "--model", Cli.Model, "--temperature", "0", .. PromptArgs(prompt), "--max-tokens", "32", "--ignore-eos"]);

        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal(HfReference.GenerateOutput(expected), r.Out); // only the completion: no prompt echo, no trailing newline off a terminal
        Assert.Contains($"[32 tokens (length), prompt {HfReference.Prompts.Value[prompt].Ids.Length} ", r.Err);
    }

    [Fact]
    public void A_completion_reads_on_from_the_prompt_with_its_space()
    {
        // the example: "The history of the city" + completion must not read "cityis"
        var r = Cli.Run("generate", "--model", Cli.Model, "--temperature", "0", "--prompt", "The history of the city", "--max-tokens", "8", "--ignore-eos");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.StartsWith(" ", r.Out);
        Assert.False(char.IsWhiteSpace(r.Out[1]), r.Out);
    }

    [Fact]
    public void The_prefill_chunk_changes_how_the_prompt_runs_not_the_output()
    {
        string prompt = string.Concat(Enumerable.Repeat("The river rose and the town council met again. ", 30)); // ≈ 300 tokens
        var whole = Cli.Run("generate", "--model", Cli.Model, "--temperature", "0", "--prompt", prompt, "--max-tokens", "16", "--ignore-eos");
        var chunked = Cli.Run("generate", "--model", Cli.Model, "--temperature", "0", "--prompt", prompt, "--max-tokens", "16", "--ignore-eos", "--prefill-chunk", "16");

        Assert.True(whole.ExitCode == 0, whole.ToString());
        Assert.True(chunked.ExitCode == 0, chunked.ToString());
        Assert.Contains("prefill chunk 512,", whole.Err); // the CPU's default
        Assert.Contains("prefill chunk 16,", chunked.Err);
        Assert.Equal(whole.Out, chunked.Out);
    }

    [Fact]
    public void Stop_string_cuts_the_output_before_it()
    {
        HfReference.Greedy expected = HfReference.GreedyContinuations.Single(g => g.Prompt == 1);
        var r = Cli.Run(["generate", "--model", Cli.Model, "--temperature", "0", .. PromptArgs(1), "--max-tokens", "32", "--stop", "only way"]);

        Assert.True(r.ExitCode == 0, r.ToString());
        string text = HfReference.GenerateOutput(expected);
        Assert.Equal(text[..text.IndexOf("only way", StringComparison.Ordinal)], r.Out);
        Assert.Contains("(stop)", r.Err);
    }

    [Fact]
    public void Sampling_with_a_seed_is_reproducible_and_differs_from_greedy()
    {
        string[] args = ["generate", "--model", Cli.Model, "--prompt", "The committee said on Friday that the",
            "--max-tokens", "24", "--ignore-eos", "--temperature", "1.5", "--top-k", "50", "--seed", "42"];
        var a = Cli.Run(args);
        var b = Cli.Run(args);

        Assert.True(a.ExitCode == 0, a.ToString());
        Assert.Equal(a.Out, b.Out);
        Assert.NotEqual(HfReference.GenerateOutput(HfReference.GreedyContinuations.Single(g => g.Prompt == 2))[..20], a.Out[..Math.Min(20, a.Out.Length)]);
    }

    [Fact]
    public void Prompt_dash_reads_stdin()
    {
        HfReference.Greedy expected = HfReference.GreedyContinuations.Single(g => g.Prompt == 2);
        var r = Cli.RunWithInput(HfReference.Prompts.Value[2].Text!,
            "generate", "--model", Cli.Model, "--temperature", "0", "--prompt", "-", "--max-tokens", "32", "--ignore-eos");

        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.Equal(HfReference.GenerateOutput(expected), r.Out);
    }
}
