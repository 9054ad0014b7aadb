namespace OrleansMixtral.Cli.Tests;

public class ErrorTests
{
    public static TheoryData<string[]> BadArguments => new(
        [],
        ["no-such-command"],
        ["generate", "--model", "x"],                                      // --prompt missing
        ["generate", "--model", "x", "--prompt", "hi", "--max-tokens", "0"],
        ["generate", "--model", "x", "--prompt", "hi", "--max-tokens", "many"],
        ["generate", "--model", "x", "--prompt", "hi", "--top-p", "1.5"],
        ["generate", "--model", "x", "--prompt", "hi", "--temperature", "-1"],
        ["generate", "--model", "x", "--prompt", "hi", "--temperature", "2.5"],               // OpenAI's range, as over HTTP
        ["generate", "--model", "x", "--prompt", "hi", "--no-such-option"],
        ["generate", "--model", "x", "--prompt", "hi", "--system", "s"],     // --system without --chat
        ["generate", "--model", "x", "--prompt", "hi", "--backend", "tpu"],
        ["bench", "--model", "x", "--concurrency", "1,x"],
        ["bench", "--model", "x", "--concurrency", "0"],
        ["bench", "--model", "x", "--prompt-tokens", "16,x"],
        ["bench", "--model", "x", "--prompt-tokens", "0"],
        ["bench", "--model", "x", "--prefill-chunk", "15"],
        ["bench", "--model", "x", "--prompt-budget", "8"],
        ["bench", "--model", "x", "--kv-admission", "Sometimes"],
        ["chat", "--cluster", "127.0.0.1:30000", "--prompt-budget", "64"],  // a cluster's silos set their own
        ["bench", "--model", "x", "--rate", "2", "--concurrency", "1,2"],   // exclusive
        ["bench", "--model", "x", "--rate", "0"],
        ["bench", "--model", "x", "--rate", "-1"],
        ["bench", "--model", "x", "--rate", "1,fast"],
        ["bench", "--model", "x", "--rate", "NaN"],
        ["bench", "--model", "x", "--rate", "20000"],
        ["bench", "--model", "x", "--rate"],
        ["bench", "--model", "x", "--rate", "2", "--requests", "0"],
        ["bench", "--model", "x", "--rate", "2", "--duration", "0"],
        ["bench", "--model", "x", "--rate", "2", "--duration", "-3"],
        ["bench", "--model", "x", "--rate", "2", "--duration", "soon"],
        ["bench", "--model", "x", "--rate", "2", "--requests", "5", "--duration", "3"],
        ["bench", "--model", "x", "--rate", "10000", "--duration", "86400"], // too many arrivals to hold
        ["bench", "--model", "x", "--rate", "2", "--prompt-tokens", "16,32"],
        ["bench", "--model", "x", "--requests", "5"],                         // no --rate
        ["bench", "--model", "x", "--duration", "5"],
        ["generate", "--model", "x", "--prompt", "hi", "--prefill-chunk", "8"],
        ["generate", "--model", "x", "--prompt", "hi", "--prefill-chunk", "big"],
        ["chat", "--cluster", "127.0.0.1:30000", "--prefill-chunk", "64"],  // a cluster's silos set their own
        ["perplexity", "--model", "x", "--file", "f", "--prefill-chunk", "64"], // no engine there
        ["perplexity", "--model", "x", "--file", "f", "--max-windows", "0"],
        ["quantize", "only-one-dir"],
        ["tokenize", "--model", "x", "--jsonl", "text too"],
        ["chat"],                                                          // neither --model nor --cluster
        ["chat", "--model", "x", "--cluster", "127.0.0.1:30000"],          // both
        ["chat", "--model", "x", "--conversation", "c1"],                  // --conversation without --cluster
        ["chat", "--model", "x", "--cluster-id", "mixtral-1"]);            // --cluster-id without --cluster

    [Theory]
    [MemberData(nameof(BadArguments))]
    public void Bad_arguments_print_usage_and_exit_2(string[] args)
    {
        var r = Cli.Run(args);

        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.Contains("Usage:", r.Err);
        Assert.Equal("", r.Out);
    }

    [Theory]
    [InlineData("--concurrency", "1", "--rate and --concurrency are exclusive")]
    [InlineData("--requests", "5", "--requests and --duration are exclusive")]
    public void Load_flags_in_conflict_say_so(string option, string value, string message)
    {
        string[] args = option == "--requests"
            ? ["bench", "--model", "x", "--rate", "2", "--duration", "3", option, value]
            : ["bench", "--model", "x", "--rate", "2", option, value];
        var r = Cli.Run(args);

        Assert.True(r.ExitCode == 2, r.ToString());
        Assert.Contains(message, r.Err);
    }

    [Fact]
    public void Help_goes_to_stdout_with_exit_0()
    {
        var r = Cli.Run("--help");

        Assert.Equal(0, r.ExitCode);
        foreach (string command in new[] { "generate", "chat", "tokenize", "perplexity", "quantize", "bench" })
            Assert.Contains(command, r.Out);
    }

    public static TheoryData<string[]> MissingModel => new(
        ["generate", "--model", "/no/such/model", "--prompt", "hi"],
        ["chat", "--model", "/no/such/model"],
        ["tokenize", "--model", "/no/such/model", "hi"],
        ["perplexity", "--model", "/no/such/model", "--file", "/no/such/file"],
        ["bench", "--model", "/no/such/model"],
        ["quantize", "/no/such/model", "/tmp/never-written"]);

    [Theory]
    [MemberData(nameof(MissingModel))]
    public void A_missing_model_directory_is_one_line_and_exit_1(string[] args)
    {
        var r = Cli.Run(args);

        Assert.True(r.ExitCode == 1, r.ToString());
        string line = Assert.Single(r.ErrLines);
        Assert.StartsWith("error: ", line);
        Assert.Contains("/no/such/model", line);
        Assert.DoesNotContain(" at ", line); // no stack trace
        Assert.False(Directory.Exists("/tmp/never-written"));
    }

    [Fact]
    public void A_directory_that_is_not_a_model_is_one_line_and_exit_1()
    {
        string dir = Directory.CreateTempSubdirectory("mixtral-cli-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, "config.json"), "{ \"model_type\": ");
            var r = Cli.Run("generate", "--model", dir, "--prompt", "hi");

            Assert.Equal(1, r.ExitCode);
            string line = Assert.Single(r.ErrLines);
            Assert.StartsWith("error: ", line);
            Assert.Contains("config.json", line);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Theory]
    [InlineData("model_type", "\"llama\"", "only mixtral")]
    [InlineData("hidden_size", "1e12", "out of range")]
    public void A_config_of_another_architecture_or_out_of_range_is_one_clear_line(string field, string value, string problem)
    {
        string dir = Directory.CreateTempSubdirectory("mixtral-cli-").FullName;
        try
        {
            foreach (var file in Directory.GetFiles(Cli.Model)) File.Copy(file, Path.Combine(dir, Path.GetFileName(file)));
            var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!;
            config[field] = System.Text.Json.Nodes.JsonNode.Parse(value);
            File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
            var r = Cli.Run("generate", "--model", dir, "--prompt", "hi", "--max-tokens", "1");

            Assert.True(r.ExitCode == 1, r.ToString());
            string line = Assert.Single(r.ErrLines);
            Assert.StartsWith("error: ", line);
            Assert.Contains(field, line);
            Assert.Contains(problem, line);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Cuda_backend_without_a_gpu_is_one_clear_line()
    {
        if (OrleansMixtral.Cuda.CudaDevice.IsAvailable(out _)) Assert.Skip("this machine has a CUDA device");
        var r = Cli.Run("generate", "--model", Cli.Model, "--prompt", "hi", "--backend", "cuda");

        Assert.Equal(1, r.ExitCode);
        string line = Assert.Single(r.ErrLines);
        Assert.Contains("cuda backend cannot start here", line);
    }

    [Fact]
    public void Synthetic_model_without_a_gpu_is_one_clear_line()
    {
        if (OrleansMixtral.Cuda.CudaDevice.IsAvailable(out _)) Assert.Skip("this machine has a CUDA device");
        var r = Cli.Run("bench", "--model", "synthetic:mixtral-8x7b", "--prompt-tokens", "8", "--output-tokens", "2", "--concurrency", "1");

        Assert.Equal(1, r.ExitCode);
        Assert.Contains("generated on the GPU", Assert.Single(r.ErrLines));
    }

    [Fact]
    public void A_prompt_longer_than_the_context_is_refused_in_one_line()
    {
        string prompt = string.Concat(Enumerable.Repeat("the quick brown fox ", 400)); // > 1024 tokens
        var r = Cli.Run("generate", "--model", Cli.Model, "--prompt", prompt, "--max-tokens", "4");

        Assert.Equal(1, r.ExitCode);
        string last = r.ErrLines[^1];
        Assert.StartsWith("error: the prompt has", last);
        Assert.Contains("context", last);
        Assert.DoesNotContain(r.ErrLines, l => l.StartsWith("at ", StringComparison.Ordinal));
        Assert.Equal("", r.Out);
    }

    [Theory]
    [InlineData("generate", "--prompt", "hi")]
    [InlineData("chat")]
    [InlineData("bench", "--prompt-tokens", "16", "--output-tokens", "2", "--concurrency", "1")]
    public void A_prefill_chunk_longer_than_the_context_is_a_usage_error_before_loading(params string[] command)
    {
        var r = Cli.Run([command[0], "--model", Cli.Model, .. command[1..], "--prefill-chunk", "2048"]);

        Assert.True(r.ExitCode == 2, r.ToString());
        string line = Assert.Single(r.ErrLines); // no "loaded …" line
        Assert.StartsWith("error: --prefill-chunk:", line);
        Assert.Contains("context of 1024", line);
        Assert.Contains("2048", line);
    }

    [Fact]
    public void Bench_longer_than_the_context_says_so_before_loading()
    {
        var r = Cli.Run("bench", "--model", Cli.Model, "--prompt-tokens", "1000", "--output-tokens", "100");

        Assert.Equal(1, r.ExitCode);
        string line = Assert.Single(r.ErrLines);
        Assert.Contains("exceeds the model's context of 1024", line);

        // any one of several lengths, before the shorter ones run
        r = Cli.Run("bench", "--model", Cli.Model, "--prompt-tokens", "16,1000", "--output-tokens", "100");
        Assert.Equal(1, r.ExitCode);
        line = Assert.Single(r.ErrLines);
        Assert.Contains("--prompt-tokens 1000", line);
        Assert.Contains("exceeds the model's context of 1024", line);
    }
}
