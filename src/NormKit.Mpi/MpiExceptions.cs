namespace NormKit.Mpi;

/// <summary>
/// No MPI library could be loaded (none installed, or none of a kind NormKit can call). The
/// message lists every library tried and why it failed; a caller may catch it and run as one
/// process instead.
/// </summary>
public sealed class MpiUnavailableException(string message) : Exception(message);

/// <summary>
/// The process was started by an MPI launcher as one of several, but the MPI library it loaded
/// sees a different world: the launcher and the library come from different MPI installations
/// (for example MPICH's mpiexec starting processes that load Open MPI), so every process would
/// run alone on its own shard. Not a case to fall back from.
/// </summary>
public sealed class MpiLaunchMismatchException(string message) : Exception(message);

/// <summary>An MPI call returned an error code.</summary>
public sealed class MpiCallException(string call, int code) : Exception($"{call} failed with MPI error code {code}.")
{
    /// <summary>The MPI function that failed.</summary>
    public string Call { get; } = call;
    /// <summary>Its return code.</summary>
    public int Code { get; } = code;
}
