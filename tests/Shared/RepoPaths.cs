namespace OrleansMixtral.Tests;

/// <summary>Locates files of the repository (models, fixtures, tools) from a test's working directory.</summary>
public static class RepoPaths
{
    public static string Root { get; } = FindRoot();

    public static string TinyModel => Path.Combine(Root, "models", "tiny-mixtral");
    public static string Fixtures => Path.Combine(Root, "tests", "fixtures");
    public static string Tools => Path.Combine(Root, "tools");

    static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "OrleansMixtral.sln"))) return dir.FullName;
        }
        // Published test builds run elsewhere (the GPU machine): fall back to the working directory.
        for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "OrleansMixtral.sln"))) return dir.FullName;
        }
        throw new InvalidOperationException("OrleansMixtral.sln not found above " + AppContext.BaseDirectory);
    }
}
