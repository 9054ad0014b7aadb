using System.Reflection;
using System.Text.RegularExpressions;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Cuda.Tests;

/// <summary>
/// Every kernel of kernels/*.cu has exactly one typed launcher in <see cref="Kernels"/> whose parameters match the
/// kernel's in count, order, kind (pointer / int / long / unsigned long long / float) and name, and every launcher
/// names a kernel that exists. The .cu side is read by a small preprocessor of its own (line splices, comments, the
/// function-like macros that stamp out a family per size, ## pasting), not by the loader's regex; the C# side by
/// reflection, plus the launchers' source, whose bodies must forward the parameters in the order they are declared.
/// A launch with arguments swapped or of the wrong type then fails to compile, or this test fails. Runs on the CPU.
/// </summary>
public sealed class KernelSignatureTests
{
    internal sealed record Param(string Kind, string Name);

    static string KernelsDir => Path.Combine(RepoPaths.Root, "kernels");
    static string LauncherSource => File.ReadAllText(Path.Combine(RepoPaths.Root, "src", "OrleansMixtral.Cuda", "Kernels.cs"));

    static Dictionary<string, Param[]> AllKernels(Func<string, string, string>? edit = null)
    {
        var kernels = new Dictionary<string, Param[]>();
        foreach (var file in Directory.GetFiles(KernelsDir, "*.cu").Order())
            foreach (var (name, parameters) in ParseKernels(edit is null ? File.ReadAllText(file) : edit(Path.GetFileName(file), File.ReadAllText(file))))
                Assert.True(kernels.TryAdd(name, parameters), $"kernel {name} is defined twice");
        return kernels;
    }

    /// <summary>extern "C" __global__ kernels of one .cu file, with macro-stamped ones expanded as the preprocessor would.</summary>
    internal static IEnumerable<(string Name, Param[] Parameters)> ParseKernels(string source)
    {
        var text = source.Replace("\\\r\n", " ").Replace("\\\n", " "); // line splices come first, as in C
        text = Regex.Replace(text, @"/\*.*?\*/", " ", RegexOptions.Singleline);
        text = Regex.Replace(text, @"//[^\n]*", "");
        var defines = Regex.Matches(text, @"^[ \t]*#define[ \t]+(\w+)\(([^)]*)\)([^\n]*)$", RegexOptions.Multiline)
            .Select(m => (Name: m.Groups[1].Value, Parameters: m.Groups[2].Value.Split(',', StringSplitOptions.TrimEntries), Body: m.Groups[3].Value))
            .Where(d => d.Body.Contains("__global__")).ToList();
        text = Regex.Replace(text, @"^[ \t]*#define[^\n]*$", "", RegexOptions.Multiline);
        foreach (var define in defines)
            text = Regex.Replace(text, $@"^[ \t]*{define.Name}\(([^)]*)\)[ \t]*;?[ \t]*$", use =>
            {
                var arguments = use.Groups[1].Value.Split(',', StringSplitOptions.TrimEntries);
                Assert.Equal(define.Parameters.Length, arguments.Length);
                var body = define.Body;
                for (var i = 0; i < arguments.Length; i++) body = Regex.Replace(body, $@"\b{define.Parameters[i]}\b", arguments[i]);
                return Regex.Replace(body, @"\s*##\s*", "") + "\n";
            }, RegexOptions.Multiline);
        foreach (Match m in Regex.Matches(text, @"extern\s+""C""\s+__global__\s+void\s+(?:__launch_bounds__\s*\((?:[^()]|\([^()]*\))*\)\s+)?(\w+)\s*\(([^)]*)\)"))
            yield return (m.Groups[1].Value, m.Groups[2].Value.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(CParam).ToArray());
    }

    static Param CParam(string declaration)
    {
        var name = Regex.Match(declaration, @"(\w+)\s*$").Groups[1].Value;
        var type = Regex.Replace(declaration[..^name.Length].Replace("__restrict__", " "), @"\bconst\b", " ");
        type = Regex.Replace(type, @"\s+", " ").Trim();
        var kind = type.Contains('*') ? "pointer" : type switch
        {
            "int" => "int",
            "long" or "long long" => "long",
            "unsigned long long" or "size_t" => "unsigned long long",
            "float" => "float",
            _ => "unsupported C type " + type, // no launcher type maps to it: the comparison reports it
        };
        return new Param(kind, name);
    }

    static string CSharpKind(Type t) =>
        t == typeof(DevicePtr) ? "pointer" : t == typeof(int) ? "int" : t == typeof(long) ? "long" : t == typeof(ulong) ? "unsigned long long"
        : t == typeof(float) ? "float" : "unsupported C# type " + t.Name;

    static MethodInfo[] Launchers => typeof(Kernels).GetMethods(BindingFlags.Public | BindingFlags.Instance | BindingFlags.DeclaredOnly)
        .Where(m => m.GetParameters() is [{ ParameterType: var t }, ..] && t == typeof(Grid)).ToArray();

    /// <summary>kernel name → (launcher, its kernel parameters): the grid and a family's variant are not kernel parameters.</summary>
    static List<(string Kernel, string Launcher, Param[] Parameters)> AllLaunchers()
    {
        var list = new List<(string, string, Param[])>();
        foreach (var method in Launchers)
        {
            var attribute = method.GetCustomAttribute<KernelAttribute>();
            Assert.True(attribute is not null, $"launcher {method.Name} has no [Kernel]");
            var parameters = method.GetParameters();
            var variant = parameters.Length > 1 && parameters[1].ParameterType.IsEnum ? parameters[1].ParameterType : null;
            var kernelParameters = parameters.Skip(variant is null ? 1 : 2).Select(p => new Param(CSharpKind(p.ParameterType), p.Name!)).ToArray();
            var names = variant is null ? [attribute!.Name] : Enum.GetValues(variant).Cast<object>().Select(v => attribute!.Name + Convert.ToInt32(v)).ToArray();
            list.AddRange(names.Select(n => (n, method.Name, kernelParameters)));
        }
        return list;
    }

    static string Normalise(string name) => name.Replace("_", "").TrimStart('@').ToLowerInvariant();

    /// <summary>What is wrong between the kernels and the launchers; empty when every kernel has exactly one matching launcher.</summary>
    internal static List<string> Mismatches(Dictionary<string, Param[]> kernels, List<(string Kernel, string Launcher, Param[] Parameters)> launchers)
    {
        var problems = new List<string>();
        foreach (var group in launchers.GroupBy(l => l.Kernel).Where(g => g.Count() > 1))
            problems.Add($"{group.Key} has {group.Count()} launchers: {string.Join(", ", group.Select(l => l.Launcher))}");
        foreach (var (kernel, launcher, parameters) in launchers)
        {
            if (!kernels.TryGetValue(kernel, out var expected))
            {
                problems.Add($"{launcher} launches {kernel}, which no kernels/*.cu defines");
                continue;
            }
            if (expected.Length != parameters.Length)
                problems.Add($"{launcher} passes {parameters.Length} arguments to {kernel}, which takes {expected.Length}");
            for (var i = 0; i < Math.Min(expected.Length, parameters.Length); i++)
            {
                if (expected[i].Kind != parameters[i].Kind)
                    problems.Add($"{launcher}: argument {i} of {kernel} ({expected[i].Name}) is {expected[i].Kind} in the kernel, {parameters[i].Kind} in the launcher");
                if (Normalise(expected[i].Name) != Normalise(parameters[i].Name))
                    problems.Add($"{launcher}: argument {i} of {kernel} is {expected[i].Name} in the kernel, {parameters[i].Name} in the launcher");
            }
        }
        var launched = launchers.Select(l => l.Kernel).ToHashSet();
        problems.AddRange(kernels.Keys.Where(k => !launched.Contains(k)).Order().Select(k => $"kernel {k} has no launcher in Kernels"));
        return problems;
    }

    [Fact]
    public void Every_kernel_has_exactly_one_launcher_with_its_parameters_in_order_kind_and_name()
    {
        var kernels = AllKernels();
        Assert.True(kernels.Count >= 50, $"only {kernels.Count} kernels parsed"); // 56 at the time of writing, 36 of them stamped out by macros
        Assert.Equal([], Mismatches(kernels, AllLaunchers()));
    }

    [Fact]
    public void The_parser_finds_the_kernels_the_loader_loads()
    {
        foreach (var file in Directory.GetFiles(KernelsDir, "*.cu"))
        {
            var source = File.ReadAllText(file);
            Assert.Equal(CudaDevice.KernelNames(source).Order(), ParseKernels(source).Select(k => k.Name).Order());
        }
        // a stamped family, every size, with the macro's parameters substituted (WT* W: a pointer whatever WT is)
        var gemm = ParseKernels(File.ReadAllText(Path.Combine(KernelsDir, "gemm.cu"))).ToDictionary(k => k.Name, k => k.Parameters);
        Assert.Equal(new Param[] { new("pointer", "W"), new("pointer", "scales"), new("pointer", "x"), new("pointer", "y"), new("int", "T"), new("int", "R"),
            new("int", "C"), new("int", "accumulate") }, gemm["gemm_bf16"]);
    }

    [Theory]
    [InlineData("gemv.cu", "int T, int R, int C, int accumulate) \\\n{ gemv_body<NT, true>", "int T, int C, int R, int accumulate) \\\n{ gemv_body<NT, true>",
        "GemvI8: argument 5 of gemv_i8_nt1 is C in the kernel, R in the launcher")]
    [InlineData("moe.cu", "int* expert_ids, float* expert_w, int H, float eps, int E, int K", "int* expert_ids, float* expert_w, int H, int E, float eps, int K",
        "RmsnormRouter: argument 7 of rmsnorm_router (E) is int in the kernel, float in the launcher")]
    [InlineData("sample.cu", "const float* logits, int V, const float* temperatures", "const float* logits, const float* temperatures, int V",
        "SampleRows: argument 1 of sample_rows (temperatures) is pointer in the kernel, int in the launcher")]
    [InlineData("quant.cu", "fill_random_i8(signed char* W, long n, unsigned long long seed)", "fill_random_i8(signed char* W, long n, unsigned long long seed, int extra)",
        "FillRandomI8 passes 3 arguments to fill_random_i8, which takes 4")]
    [InlineData("quant.cu", "fill_random_i8(signed char* W, long n, unsigned long long seed)", "fill_random_i8(signed char* W, int n, unsigned long long seed)",
        "FillRandomI8: argument 1 of fill_random_i8 (n) is int in the kernel, long in the launcher")]
    [InlineData("elementwise.cu", "__global__ void embed_bf16(", "__global__ void embed_f16(", "EmbedBf16 launches embed_bf16, which no kernels/*.cu defines")]
    public void A_kernel_whose_arguments_change_order_type_or_count_is_reported(string file, string original, string changed, string expected)
    {
        var kernels = AllKernels((name, source) =>
        {
            if (name != file) return source;
            Assert.Contains(original, source);
            return source.Replace(original, changed);
        });
        Assert.Contains(expected, Mismatches(kernels, AllLaunchers()));
    }

    /// <summary>Each launcher's body: the launcher's own kernel (or family), the grid, then its parameters as declared.</summary>
    internal static List<string> BodyMismatches(string source)
    {
        var problems = new List<string>();
        var assigned = Regex.Matches(source, @"(_\w+) = (?:One|Family)\(nameof\((\w+)\)\);").ToDictionary(m => m.Groups[1].Value, m => m.Groups[2].Value);
        var bodies = Regex.Matches(source, @"\[Kernel\(""\w+""\)\]\s*public void (\w+)\(([^)]*)\)\s*=>\s*(Launch|LaunchShared)\((.*?)\);", RegexOptions.Singleline);
        foreach (Match body in bodies)
        {
            var method = body.Groups[1].Value;
            var parameters = body.Groups[2].Value.Split(',').Select(p => Regex.Match(p.Trim(), @"@?(\w+)$").Value).ToArray();
            var arguments = TopLevelArguments(body.Groups[4].Value);
            var field = "_" + char.ToLowerInvariant(method[0]) + method[1..];
            var family = typeof(Kernels).GetMethod(method)?.GetParameters() is [_, { ParameterType.IsEnum: true }, ..];
            var kernel = family ? $"Pick({field}, (int){parameters[1]})" : field;
            var expected = new List<string> { kernel, "grid" };
            if (body.Groups[3].Value == "LaunchShared") expected.Add($"WgmmaSharedBytes({parameters[1]})");
            expected.AddRange(parameters.Skip(family ? 2 : 1));
            if (!arguments.SequenceEqual(expected))
                problems.Add($"{method} forwards ({string.Join(", ", arguments)}), expected ({string.Join(", ", expected)})");
            if (!assigned.TryGetValue(field, out var resolvedFor) || resolvedFor != method)
                problems.Add($"{field} is not resolved from {method}'s [Kernel] (One/Family(nameof({method})))");
        }
        if (bodies.Count != Launchers.Length) problems.Add($"{bodies.Count} launcher bodies read from Kernels.cs, {Launchers.Length} launchers by reflection");
        return problems;
    }

    static string[] TopLevelArguments(string call)
    {
        var arguments = new List<string>();
        int depth = 0, start = 0;
        for (var i = 0; i <= call.Length; i++)
        {
            if (i == call.Length || call[i] == ',' && depth == 0)
            {
                arguments.Add(Regex.Replace(call[start..i], @"\s+", " ").Trim());
                start = i + 1;
            }
            else if (call[i] == '(') depth++;
            else if (call[i] == ')') depth--;
        }
        return arguments.ToArray();
    }

    [Fact]
    public void Every_launcher_forwards_its_parameters_in_declared_order_to_its_own_kernel()
    {
        Assert.Equal([], BodyMismatches(LauncherSource));
    }

    [Fact]
    public void A_launcher_that_swaps_two_arguments_in_its_body_is_reported()
    {
        var source = LauncherSource;
        const string original = "Launch(_rmsnormRouter, grid, x, w, @out, gate, expertIds, expertW, H, eps, E, K);";
        Assert.Contains(original, source);
        var problems = BodyMismatches(source.Replace(original, original.Replace("E, K", "K, E")));
        Assert.Single(problems);
        Assert.StartsWith("RmsnormRouter forwards", problems[0]);
        // and one that launches another kernel's function
        Assert.NotEmpty(BodyMismatches(source.Replace("Launch(_gemmI8, grid,", "Launch(_gemmBf16, grid,")));
    }

    [Fact]
    public void The_variant_enums_are_the_stamped_sizes_and_the_wgmma_tiles_ascend()
    {
        // (that each enum value names a kernel and each stamped kernel a value is the first test's; the backend walks WgmmaTiles in order)
        Assert.Equal([1, 2, 4, 8], Enum.GetValues<SkinnyTokenTiles>().Select(v => (int)v));
        Assert.Equal([32, 64, 128], Kernels.WgmmaTiles.Select(v => (int)v));
        Assert.Equal(Enum.GetValues<WgmmaTile>(), Kernels.WgmmaTiles);
    }
}
