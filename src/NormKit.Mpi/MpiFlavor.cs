namespace NormKit.Mpi;

/// <summary>Which binary interface the loaded library has.</summary>
public enum MpiFlavor
{
    /// <summary>Open MPI: handles are addresses of exported objects (ompi_mpi_comm_world, ...), MPI_IN_PLACE is 1.</summary>
    OpenMpi,
    /// <summary>MPICH and its ABI family (Intel MPI, MVAPICH): handles are fixed 32-bit integers, MPI_IN_PLACE is -1.</summary>
    Mpich,
}
