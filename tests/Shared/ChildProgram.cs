using System.Diagnostics;

namespace OrleansMixtral.Tests;

/// <summary>Runs a built program of the repository (<see cref="RepoPaths.BuiltProgram"/>) to its end, from the repository root.</summary>
public static class ChildProgram
{
    /// <summary>Exit code and both outputs; past <paramref name="timeout"/> the process tree is killed and the wait throws.</summary>
    public static async Task<(int ExitCode, string Out, string Err)> RunAsync(string name, TimeSpan timeout, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = RepoPaths.Root };
        psi.ArgumentList.Add(RepoPaths.BuiltProgram(name));
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync(), stderr = process.StandardError.ReadToEndAsync();
        try { await process.WaitForExitAsync().WaitAsync(timeout); }
        catch (TimeoutException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }
        return (process.ExitCode, await stdout, await stderr);
    }
}
