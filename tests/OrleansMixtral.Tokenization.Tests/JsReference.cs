using System.Diagnostics;
using System.Text;
using System.Text.Json;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Tokenization.Tests;

public sealed record ParityLine(string Text, int[] Ids);

/// <summary>
/// Token ids from the npm package mistral-tokenizer-js, run with node: an implementation independent of ours
/// (tools/tokenizer/parity-lines.mjs, and js-encode.mjs beside this file).
/// </summary>
public static class JsReference
{
    static readonly string ToolDir = Path.Combine(RepoPaths.Tools, "tokenizer");
    static readonly string PackageFile = Path.Combine(ToolDir, "node_modules", "mistral-tokenizer-js", "mistral-tokenizer.js");
    static readonly Lazy<bool> NodeAvailable = new(() => Requirements.FindProgram("node") is not null);

    /// <summary>The heldout corpus of the tiny model (in the repository).</summary>
    public static string HeldoutText => Path.Combine(RepoPaths.Fixtures, "tiny-mixtral", "heldout.txt");

    /// <summary>parity-lines.mjs --count 5000 --seed 11: traps, unicode, code, whitespace runs, numbers.</summary>
    public static IReadOnlyList<ParityLine> GeneratedLines => Generated.Value;
    static readonly Lazy<IReadOnlyList<ParityLine>> Generated = new(() => ParityLines("--count", "5000", "--seed", "11"));

    /// <summary>
    /// Skips the test (fails it under CI) without node or without the reference package, which ./test.sh installs with
    /// npm ci (tests install nothing).
    /// </summary>
    public static void SkipWithoutNode()
    {
        Requirements.Require(NodeAvailable.Value, "node is not installed: the JS reference tokenizer cannot run");
        Requirements.Require(File.Exists(PackageFile), $"{PackageFile} is not installed (./test.sh runs npm ci in tools/tokenizer)");
    }

    public static IReadOnlyList<ParityLine> ParityLines(params string[] args)
    {
        string output = RunNode(["parity-lines.mjs", .. args], stdin: null);
        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line => JsonSerializer.Deserialize<ParityLine>(line, JsonOptions)!)
            .ToList();
    }

    /// <summary>The package's ids for each text (BOS as asked, with the dummy prefix).</summary>
    public static int[][] Encode(IReadOnlyList<(string Text, bool Bos)> requests) =>
        Encode(requests.Select(r => (r.Text, r.Bos, DummyPrefix: true)).ToList());

    /// <summary>The package's ids for each text, BOS and dummy prefix as asked.</summary>
    public static int[][] Encode(IReadOnlyList<(string Text, bool Bos, bool DummyPrefix)> requests)
    {
        var stdin = new StringBuilder();
        foreach ((string text, bool bos, bool space) in requests) stdin.Append(JsonSerializer.Serialize(new { text, bos, space })).Append('\n');
        string script = Path.Combine(RepoPaths.Root, "tests", "OrleansMixtral.Tokenization.Tests", "js-encode.mjs");
        string output = RunNode([script, PackageFile], stdin.ToString());
        int[][] ids = output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(line => JsonSerializer.Deserialize<int[]>(line)!).ToArray();
        Assert.Equal(requests.Count, ids.Length);
        return ids;
    }

    static readonly JsonSerializerOptions JsonOptions = new() { PropertyNameCaseInsensitive = true };

    /// <summary>Runs one of tools/tokenizer's scripts with node (the package installed first).</summary>
    public static string RunTool(string script, params string[] args) => RunNode([script, .. args], null);

    static string RunNode(string[] args, string? stdin)
    {
        SkipWithoutNode();
        return Run("node", args, stdin);
    }

    static string Run(string program, string[] args, string? stdin)
    {
        var start = new ProcessStartInfo(program)
        {
            WorkingDirectory = ToolDir,
            RedirectStandardInput = stdin is not null,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
            StandardInputEncoding = stdin is null ? null : new UTF8Encoding(false),
        };
        foreach (string arg in args) start.ArgumentList.Add(arg);
        using Process process = Process.Start(start)!;
        Task<string> output = process.StandardOutput.ReadToEndAsync();
        Task<string> errors = process.StandardError.ReadToEndAsync();
        if (stdin is not null)
        {
            process.StandardInput.Write(stdin);
            process.StandardInput.Close();
        }
        if (!process.WaitForExit(TimeSpan.FromMinutes(3)))
        {
            process.Kill();
            Assert.Fail($"{program} {string.Join(' ', args)} did not finish in 3 minutes");
        }
        Assert.True(process.ExitCode == 0, $"{program} {string.Join(' ', args)} failed ({process.ExitCode}): {errors.Result}");
        return output.Result;
    }
}
