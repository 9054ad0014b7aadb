namespace OrleansMixtral.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        var console = CliConsole.ForProcess();
        try
        {
            return CliApp.Run(args, console, handleTermination: true);
        }
        finally
        {
            console.Out.Flush();
        }
    }
}
