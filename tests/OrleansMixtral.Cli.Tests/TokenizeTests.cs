using System.Text.Json;

namespace OrleansMixtral.Cli.Tests;

public class TokenizeTests
{
    [Fact]
    public void Jsonl_gives_the_Hugging_Face_ids_of_every_plain_prompt()
    {
        HfReference.Prompt[] plain = HfReference.Prompts.Value.Where(p => p.Kind == "plain").ToArray();
        Assert.True(plain.Length >= 5);
        string input = string.Concat(plain.Select(p => JsonSerializer.Serialize(p.Text) + "\n"));

        var r = Cli.RunWithInput(input, "tokenize", "--model", Cli.Model, "--jsonl");

        Assert.True(r.ExitCode == 0, r.ToString());
        string[] lines = r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(plain.Length, lines.Length);
        for (int i = 0; i < plain.Length; i++)
            Assert.Equal(plain[i].Ids, JsonSerializer.Deserialize<int[]>(lines[i]));
    }

    [Fact]
    public void Bad_json_names_the_line_and_exits_1()
    {
        var r = Cli.RunWithInput("\"fine\"\n{not json\n\"never read\"\n", "tokenize", "--model", Cli.Model, "--jsonl");

        Assert.Equal(1, r.ExitCode);
        Assert.Single(r.ErrLines);
        Assert.Contains("line 2", r.Err);
        int[]? first = JsonSerializer.Deserialize<int[]>(r.Out.Trim()); // the good line before it was written, alone
        Assert.NotNull(first);
        Assert.Equal(1, first[0]);
    }

    [Fact]
    public void A_json_value_that_is_not_a_string_is_refused()
    {
        var r = Cli.RunWithInput("[1,2]\n", "tokenize", "--model", Cli.Model, "--jsonl");

        Assert.Equal(1, r.ExitCode);
        Assert.Contains("line 1", r.Err);
    }

    [Fact]
    public void Text_argument_without_jsonl_and_no_bos()
    {
        HfReference.Prompt p = HfReference.Prompts.Value[0];
        var withBos = Cli.Run("tokenize", "--model", Cli.Model, p.Text!);
        var withoutBos = Cli.Run("tokenize", "--model", Cli.Model, "--no-bos", p.Text!);

        Assert.Equal(p.Ids, JsonSerializer.Deserialize<int[]>(withBos.Out));
        Assert.Equal(p.Ids[1..], JsonSerializer.Deserialize<int[]>(withoutBos.Out));
    }
}
