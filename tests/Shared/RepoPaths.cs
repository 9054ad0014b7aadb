namespace OrleansMixtral.Tests;

/// <summary>Locates files of the repository (models, fixtures, tools) from a test's working directory.</summary>
public static class RepoPaths
{
    public static string Root { get; } = FindRoot();

    public static string TinyModel => Path.Combine(Root, "models", "tiny-mixtral");
    public static string Fixtures => Path.Combine(Root, "tests", "fixtures");
    public static string Tools => Path.Combine(Root, "tools");

    /// <summary>
    /// The dll of a program under src/ or silos/ as built in the same configuration as the running tests (their project
    /// references it, so it is built first).
    /// </summary>
    public static string BuiltProgram(string name)
    {
        var output = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)); // bin/<Configuration>/net10.0
        var paths = new[] { "src", "silos" }.Select(folder => Path.Combine(Root, folder, name, "bin", output.Parent!.Name, "net10.0", name + ".dll")).ToList();
        return paths.FirstOrDefault(File.Exists) ?? throw new FileNotFoundException($"{name} is not built", paths[0]);
    }

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
