using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace NormKit.Benchmarks;

/// <summary>
/// Memory-bandwidth probes on large 64-byte-aligned arrays: copy, read-only sum and triad
/// (a = b + s * c), with normal or non-temporal stores, split evenly over 1 or 2 threads.
/// </summary>
public sealed unsafe class Roofline : IDisposable
{
    public static readonly string[] Kinds = ["copy", "copy-nt", "sum", "triad", "triad-nt"];

    private readonly float* _a, _b, _c;
    private readonly long _n;
    private readonly string _kind;
    private readonly int _threads;
    private double _sink;

    public Roofline(string kind, int threads, long bytesPerArray)
    {
        _kind = kind; _threads = threads;
        _n = bytesPerArray / 4 / 64 * 64;
        _a = (float*)NativeMemory.AlignedAlloc((nuint)(_n * 4), 64);
        _b = (float*)NativeMemory.AlignedAlloc((nuint)(_n * 4), 64);
        _c = (float*)NativeMemory.AlignedAlloc((nuint)(_n * 4), 64);
        for (long i = 0; i < _n; i++) { _a[i] = 0; _b[i] = i % 7; _c[i] = i % 5; }
    }

    /// <summary>Bytes one run moves: copy 2 arrays, sum 1, triad 3.</summary>
    public long Bytes => _n * 4 * (_kind.StartsWith("copy") ? 2 : _kind == "sum" ? 1 : 3);

    public static long BytesFor(string kind, long bytesPerArray) => bytesPerArray / 4 / 64 * 64 * 4 * (kind.StartsWith("copy") ? 2 : kind == "sum" ? 1 : 3);

    public void Run()
    {
        if (_threads == 1) Part(0);
        else Parallel.For(0, _threads, new ParallelOptions { MaxDegreeOfParallelism = _threads }, Part);
    }

    private void Part(int t)
    {
        long per = _n / _threads / 64 * 64;
        long from = t * per, to = t == _threads - 1 ? _n : from + per;
        switch (_kind)
        {
            case "copy":
                for (long i = from; i < to; i += 8) Vector256.Store(Vector256.Load(_b + i), _a + i);
                break;
            case "copy-nt":
                for (long i = from; i < to; i += 8) Vector256.StoreAlignedNonTemporal(Vector256.LoadAligned(_b + i), _a + i);
                break;
            case "sum":
                var s0 = Vector256<float>.Zero; var s1 = Vector256<float>.Zero;
                for (long i = from; i < to; i += 16) { s0 += Vector256.Load(_b + i); s1 += Vector256.Load(_b + i + 8); }
                _sink += Vector256.Sum(s0 + s1);
                break;
            case "triad":
                var k = Vector256.Create(3f);
                for (long i = from; i < to; i += 8) Vector256.Store(Vector256.Load(_b + i) + k * Vector256.Load(_c + i), _a + i);
                break;
            case "triad-nt":
                var kn = Vector256.Create(3f);
                for (long i = from; i < to; i += 8) Vector256.StoreAlignedNonTemporal(Vector256.LoadAligned(_b + i) + kn * Vector256.LoadAligned(_c + i), _a + i);
                break;
        }
    }

    public void Dispose()
    {
        NativeMemory.AlignedFree(_a); NativeMemory.AlignedFree(_b); NativeMemory.AlignedFree(_c);
    }
}
