namespace OrleansMixtral;

/// <summary>
/// Which compute backend runs the model (the CLI's --backend, the silo's Mixtral:Backend): <see cref="Auto"/> picks the
/// GPU when there is one.
/// </summary>
public enum BackendKind { Auto, Cpu, Cuda }
