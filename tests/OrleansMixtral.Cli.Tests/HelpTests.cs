using System.CommandLine;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Cli.Tests;

/// <summary>What a user reads about the flags: help shows list defaults as they are typed, and the README names every flag.</summary>
public sealed class HelpTests
{
    [Fact]
    public void Help_shows_a_comma_separated_default_with_commas()
    {
        var r = Cli.Run("bench", "--help");
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("[default: 1,2,4,8]", r.Out);
        Assert.Contains("[default: 512]", r.Out);
        Assert.DoesNotContain("1|2|4|8", r.Out);
    }

    [Fact]
    public void The_readme_names_every_flag_of_every_command()
    {
        string readme = File.ReadAllText(Path.Combine(RepoPaths.Root, "README.md"));
        RootCommand root = CliApp.BuildRootCommand(new CliConsole(TextReader.Null, TextWriter.Null, TextWriter.Null));
        var missing = root.Subcommands
            .SelectMany(c => c.Options.Where(o => o.Name.StartsWith("--") && o.Name is not "--help" and not "--version")
                .Select(o => (Command: c.Name, Flag: o.Name)))
            .Where(x => !readme.Contains(x.Flag + " ", StringComparison.Ordinal) && !readme.Contains(x.Flag + "`", StringComparison.Ordinal)
                        && !readme.Contains(x.Flag + "]", StringComparison.Ordinal))
            .ToList();
        Assert.True(missing.Count == 0, "README.md does not mention: " + string.Join(", ", missing.Select(m => $"{m.Command} {m.Flag}")));
    }
}
