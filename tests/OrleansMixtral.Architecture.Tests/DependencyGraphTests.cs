using System.Xml.Linq;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Architecture.Tests;

/// <summary>
/// The layering rules of issue 13, checked on the ProjectReference graph of the .csproj files (transitively, with the
/// packages each project brings): the engine and the CUDA backend know no Orleans; grains reference no backend; the
/// gateway links no engine, no backend and no grain implementation (it is an Orleans client: contracts and tokenizer).
/// References with ReferenceOutputAssembly="false" only order builds (a launcher starts those programs) and do not link.
/// </summary>
public sealed class DependencyGraphTests
{
    static readonly Dictionary<string, string> Projects = Directory
        .EnumerateFiles(RepoPaths.Root, "*.csproj", SearchOption.AllDirectories)
        .Where(p => !p.Split(Path.DirectorySeparatorChar).Any(d => d is "bin" or "obj" or "node_modules"))
        .ToDictionary(p => Path.GetFileNameWithoutExtension(p), Path.GetFullPath);

    sealed record Node(string Name, string[] References, string[] Packages);

    static Node Read(string name)
    {
        var path = Projects[name];
        var doc = XDocument.Load(path);
        var references = doc.Descendants("ProjectReference")
            .Where(r => !string.Equals((string?)r.Attribute("ReferenceOutputAssembly"), "false", StringComparison.OrdinalIgnoreCase))
            .Select(r => Path.GetFileNameWithoutExtension(((string)r.Attribute("Include")!).Replace('\\', '/')))
            .ToArray();
        var packages = doc.Descendants("PackageReference").Select(p => (string)p.Attribute("Include")!).ToArray();
        foreach (var r in references) Assert.True(Projects.ContainsKey(r), $"{name} references {r}, which is not in the repository");
        return new Node(name, references, packages);
    }

    /// <summary>Every project <paramref name="name"/> links, itself included, and every package those reference.</summary>
    static (HashSet<string> Projects, HashSet<string> Packages) Closure(string name)
    {
        var projects = new HashSet<string>();
        var packages = new HashSet<string>();
        var pending = new Stack<string>([name]);
        while (pending.TryPop(out var next))
        {
            if (!projects.Add(next)) continue;
            var node = Read(next);
            packages.UnionWith(node.Packages);
            foreach (var r in node.References) pending.Push(r);
        }
        return (projects, packages);
    }

    [Theory]
    [InlineData("OrleansMixtral.Abstractions")]
    [InlineData("OrleansMixtral.Model")]
    [InlineData("OrleansMixtral.Tokenization")]
    [InlineData("OrleansMixtral.Engine")]
    [InlineData("OrleansMixtral.Cuda")]
    [InlineData("OrleansMixtral.Backends")]
    public void The_engine_and_its_backends_know_no_Orleans(string project)
    {
        var (projects, packages) = Closure(project);
        Assert.DoesNotContain(packages, p => p.StartsWith("Microsoft.Orleans", StringComparison.OrdinalIgnoreCase));
        Assert.DoesNotContain(projects, p => p.StartsWith("OrleansMixtral.Grains", StringComparison.Ordinal) || p is "OrleansMixtral.Client" or "OrleansMixtral.Hosting");
    }

    [Fact]
    public void Grains_reference_no_backend()
    {
        var (projects, _) = Closure("OrleansMixtral.Grains");
        Assert.DoesNotContain("OrleansMixtral.Backends", projects);
        Assert.DoesNotContain("OrleansMixtral.Cuda", projects);
        Assert.DoesNotContain("OrleansMixtral.Hosting", projects);
        Assert.Contains("OrleansMixtral.Grains.Contracts", projects);
    }

    [Fact]
    public void The_shared_vocabulary_depends_on_nothing_and_every_layer_uses_it()
    {
        var node = Read("OrleansMixtral.Abstractions");
        Assert.Empty(node.References);
        Assert.Empty(node.Packages);
        foreach (var layer in new[] { "OrleansMixtral.Engine", "OrleansMixtral.Grains.Contracts", "OrleansMixtral.Client.AI", "OrleansMixtral.Gateway", "OrleansMixtral.Cli" })
            Assert.Contains("OrleansMixtral.Abstractions", Closure(layer).Projects);
    }

    [Fact]
    public void Contracts_know_no_engine()
    {
        var (projects, _) = Closure("OrleansMixtral.Grains.Contracts");
        Assert.DoesNotContain("OrleansMixtral.Engine", projects);
        Assert.DoesNotContain("OrleansMixtral.Grains", projects);
    }

    [Theory]
    [InlineData("OrleansMixtral.Gateway")]
    [InlineData("OrleansMixtral.Client")]
    [InlineData("OrleansMixtral.Client.AI")]
    public void The_gateway_and_the_client_libraries_link_no_engine_backend_or_grain_implementation(string project)
    {
        var (projects, packages) = Closure(project);
        foreach (var forbidden in new[] { "OrleansMixtral.Engine", "OrleansMixtral.Cuda", "OrleansMixtral.Backends", "OrleansMixtral.Grains", "OrleansMixtral.Hosting" })
            Assert.DoesNotContain(forbidden, projects);
        Assert.DoesNotContain("Microsoft.Orleans.Server", packages);
        Assert.Contains("OrleansMixtral.Grains.Contracts", projects);
    }

    [Fact]
    public void The_silo_host_composes_grains_and_backends_through_hosting()
    {
        // The rules above hold because the composition moved, not because the graph reads empty.
        var (silo, _) = Closure("OrleansMixtral.Silo");
        foreach (var linked in new[] { "OrleansMixtral.Hosting", "OrleansMixtral.Grains", "OrleansMixtral.Backends", "OrleansMixtral.Cuda", "OrleansMixtral.Gateway" })
            Assert.Contains(linked, silo);
        var hosting = Read("OrleansMixtral.Hosting");
        Assert.Contains("OrleansMixtral.Backends", hosting.References);
        Assert.Contains("OrleansMixtral.Grains", hosting.References);
    }
}
