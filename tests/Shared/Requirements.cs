namespace OrleansMixtral.Tests;

/// <summary>
/// What a test needs from the machine besides .NET and the repository (node and the reference npm package, redis-server,
/// PostgreSQL): when it is missing the test is skipped on a developer's machine, but fails under CI
/// (<see cref="CiVariable"/>=1, set by .ci/run), where test.sh installs all of it and only the GPU tests may skip. Tests
/// install nothing themselves.
/// </summary>
public static class Requirements
{
    public const string CiVariable = "ORLEANSMIXTRAL_CI";

    public static bool Ci => Environment.GetEnvironmentVariable(CiVariable) == "1";

    /// <summary>Skips the test, or fails it under CI, unless <paramref name="present"/>.</summary>
    /// <param name="missing">What is missing and how to get it, as one line.</param>
    public static void Require(bool present, string missing)
    {
        if (present) return;
        if (Ci) Assert.Fail($"{missing} (under CI, {CiVariable}=1, only GPU tests may skip: test.sh installs it)");
        Assert.Skip(missing);
    }

    /// <summary>A program on the PATH (or in /usr/bin, /usr/sbin), or null.</summary>
    public static string? FindProgram(string name, params string[] moreDirectories) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator)
            .Concat(["/usr/bin", "/usr/sbin", .. moreDirectories])
            .Where(d => d.Length > 0)
            .Select(d => Path.Combine(d, name))
            .FirstOrDefault(File.Exists);
}
