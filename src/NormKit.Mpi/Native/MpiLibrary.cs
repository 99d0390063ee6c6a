using System.Runtime.InteropServices;
using NormKit.Mpi;

namespace NormKit.Mpi.Native;

// The system's MPI library, opened at run time, with the dozen entry points NormKit calls and
// the handles of MPI_COMM_WORLD, MPI_DOUBLE and MPI_SUM for its binary interface. Handles are
// carried as nint for both flavours: MPICH's int handles travel in the same argument register.
internal sealed unsafe class MpiLibrary
{
    public const int ThreadSerialized = 2;   // the same value in Open MPI and MPICH

    public required string Path { get; init; }
    public required MpiFlavor Flavor { get; init; }
    public required nint CommWorld { get; init; }
    public required nint Double { get; init; }
    public required nint Sum { get; init; }
    public required nint InPlace { get; init; }
    public required nint StatusIgnore { get; init; }

    public required delegate* unmanaged<int*, nint, int, int*, int> InitThread { get; init; }
    public required delegate* unmanaged<int> FinalizeMpi { get; init; }
    public required delegate* unmanaged<nint, int*, int> CommRank { get; init; }
    public required delegate* unmanaged<nint, int*, int> CommSize { get; init; }
    public required delegate* unmanaged<void*, int, nint, void*, int, nint, nint, int> Allgather { get; init; }
    public required delegate* unmanaged<void*, void*, int, nint, nint, nint, int> Allreduce { get; init; }
    public required delegate* unmanaged<nint, int> Barrier { get; init; }
    public required delegate* unmanaged<nint, int, int> Abort { get; init; }
    public required delegate* unmanaged<nint, nint*, int> Ibarrier { get; init; }
    public required delegate* unmanaged<void*, int, nint, void*, int, nint, nint, nint*, int> Iallgather { get; init; }
    public required delegate* unmanaged<nint*, int*, nint, int> Test { get; init; }
    public required delegate* unmanaged<byte*, int*, int> GetLibraryVersion { get; init; }

    /// <summary>
    /// The libraries tried, in order: <c>NORMKIT_MPI_LIBRARY</c> alone when set; otherwise the one
    /// that matches the launcher's environment first (Open MPI's mpirun sets OMPI_*, MPICH's Hydra
    /// sets PMI_*), then the other.
    /// </summary>
    public static IReadOnlyList<string> Candidates()
    {
        if (Environment.GetEnvironmentVariable("NORMKIT_MPI_LIBRARY") is { Length: > 0 } forced) return [forced];
        string[] openMpi = ["libmpi.so.40"], mpich = ["libmpich.so.12", "libmpi.so.12"];
        bool hydra = MpiWorld.LauncherWorldSize()?.Variable == "PMI_SIZE";   // not Open MPI's mpirun
        return hydra ? [.. mpich, .. openMpi] : [.. openMpi, .. mpich];
    }

    /// <summary>Opens the first candidate that loads; the reasons of every failure otherwise.</summary>
    public static MpiLibrary? TryLoad(out string failures)
    {
        var reasons = new List<string>();
        foreach (string name in Candidates())
        {
            nint h = Libc.OpenGlobal(name, out string? error);
            if (h == 0) { reasons.Add($"{name}: {error}"); continue; }
            try { failures = ""; return Bind(name, h); }
            catch (EntryPointNotFoundException e) { reasons.Add($"{name}: {e.Message}"); }
        }
        failures = string.Join("; ", reasons);
        return null;
    }

    private static MpiLibrary Bind(string path, nint h)
    {
        nint F(string name) => Libc.Symbol(h, name) is var p and not 0 ? p
            : throw new EntryPointNotFoundException($"the library has no {name}, so it is not an MPI library NormKit can call");
        nint world = Libc.Symbol(h, "ompi_mpi_comm_world");
        bool ompi = world != 0;
        return new MpiLibrary
        {
            Path = path,
            Flavor = ompi ? MpiFlavor.OpenMpi : MpiFlavor.Mpich,
            CommWorld = ompi ? world : 0x44000000,
            Double = ompi ? F("ompi_mpi_double") : 0x4c00080b,
            Sum = ompi ? F("ompi_mpi_op_sum") : 0x58000003,
            InPlace = ompi ? 1 : -1,
            StatusIgnore = ompi ? 0 : 1,
            InitThread = (delegate* unmanaged<int*, nint, int, int*, int>)F("MPI_Init_thread"),
            FinalizeMpi = (delegate* unmanaged<int>)F("MPI_Finalize"),
            CommRank = (delegate* unmanaged<nint, int*, int>)F("MPI_Comm_rank"),
            CommSize = (delegate* unmanaged<nint, int*, int>)F("MPI_Comm_size"),
            Allgather = (delegate* unmanaged<void*, int, nint, void*, int, nint, nint, int>)F("MPI_Allgather"),
            Allreduce = (delegate* unmanaged<void*, void*, int, nint, nint, nint, int>)F("MPI_Allreduce"),
            Barrier = (delegate* unmanaged<nint, int>)F("MPI_Barrier"),
            Abort = (delegate* unmanaged<nint, int, int>)F("MPI_Abort"),
            Ibarrier = (delegate* unmanaged<nint, nint*, int>)F("MPI_Ibarrier"),
            Iallgather = (delegate* unmanaged<void*, int, nint, void*, int, nint, nint, nint*, int>)F("MPI_Iallgather"),
            Test = (delegate* unmanaged<nint*, int*, nint, int>)F("MPI_Test"),
            GetLibraryVersion = (delegate* unmanaged<byte*, int*, int>)F("MPI_Get_library_version"),
        };
    }

    public string Version()
    {
        const int max = 8192;   // MPICH's MPI_MAX_LIBRARY_VERSION_STRING; Open MPI's is 256
        byte* buffer = stackalloc byte[max];
        int len = 0;
        GetLibraryVersion(buffer, &len);
        string s = Marshal.PtrToStringUTF8((nint)buffer, Math.Clamp(len, 0, max)).TrimEnd('\0', '\n', ' ');
        int nl = s.IndexOf('\n');
        return nl > 0 ? s[..nl].Trim() : s;
    }
}
