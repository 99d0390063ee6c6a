using System.Runtime.InteropServices;

namespace NormKit.Mpi.Native;

// dlopen with RTLD_GLOBAL: OpenMPI loads its components as plug-ins that resolve symbols of
// libmpi itself, which NativeLibrary.Load (RTLD_LOCAL) would hide from them.
internal static partial class Libc
{
    private const int RtldNow = 0x2, RtldGlobal = 0x100;

    [LibraryImport("libc.so.6", EntryPoint = "dlopen", StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint DlOpen(string file, int mode);

    [LibraryImport("libc.so.6", EntryPoint = "dlerror")]
    private static partial nint DlError();

    [LibraryImport("libc.so.6", EntryPoint = "dlsym", StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint DlSym(nint handle, string symbol);

    // .NET keeps its own copy of the environment on Unix; the MPI library reads the C one.
    [LibraryImport("libc.so.6", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnv(string name, string value, int overwrite);

    public static nint OpenGlobal(string file, out string? error)
    {
        nint h = DlOpen(file, RtldNow | RtldGlobal);
        error = h == 0 ? Marshal.PtrToStringUTF8(DlError()) : null;
        return h;
    }

    public static nint Symbol(nint handle, string name) => DlSym(handle, name);

    /// <summary>Sets a variable for native code unless it is already set.</summary>
    public static void SetDefaultEnv(string name, string value) => SetEnv(name, value, 0);
}
