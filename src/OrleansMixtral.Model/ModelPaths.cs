namespace OrleansMixtral.Model;

/// <summary>Finds a model directory given on the command line or in configuration.</summary>
public static class ModelPaths
{
    /// <summary>
    /// An absolute path as is; a relative one against the working directory, else against the repository root (the
    /// folder above the running program that holds OrleansMixtral.sln), so the bundled <c>models/tiny-mixtral</c> is
    /// found from anywhere in the checkout.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">None of these exists.</exception>
    public static string Resolve(string model)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(model);
        if (Path.IsPathRooted(model))
        {
            if (Directory.Exists(model)) return Path.GetFullPath(model);
            throw new DirectoryNotFoundException($"model directory not found: {model}");
        }
        var candidates = new List<string> { Path.GetFullPath(model) };
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "OrleansMixtral.sln")))
                {
                    candidates.Add(Path.Combine(dir.FullName, model));
                    break;
                }
            }
        }
        foreach (var c in candidates)
            if (Directory.Exists(c)) return Path.GetFullPath(c);
        throw new DirectoryNotFoundException($"model directory not found: {model} (looked in {string.Join(", ", candidates.Distinct())})");
    }
}
