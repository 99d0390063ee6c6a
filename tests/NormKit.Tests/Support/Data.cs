namespace NormKit.Tests.Support;

/// <summary>Seeded test data.</summary>
public static class Data
{
    public static double[] Normal(int seed, int n, double mean = 0, double std = 1)
    {
        var rng = new Random(seed);
        var a = new double[n];
        for (int i = 0; i < n; i++)
        {
            double u1 = 1 - rng.NextDouble(), u2 = rng.NextDouble();
            a[i] = mean + std * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
        }
        return a;
    }

    public static float[] F(double[] a) => Array.ConvertAll(a, v => (float)v);
    public static double[] D(float[] a) => Array.ConvertAll(a, v => (double)v);
    /// <summary>Rounds to float and back, so a double reference sees exactly the float inputs.</summary>
    public static double[] RoundToFloat(double[] a) => Array.ConvertAll(a, v => (double)(float)v);
}

/// <summary>Tolerances from REFERENCE.md (PyTorch's defaults): |a - e| &lt;= atol + rtol * |e|.</summary>
public readonly record struct Tol(double Rtol, double Atol)
{
    public static readonly Tol F32 = new(1.3e-6, 1e-5);
    public static readonly Tol F64 = new(1e-7, 1e-7);
    public static readonly Tol GradCheck = new(1e-3, 1e-5);
    public static readonly Tol Onnx = new(1e-3, 1e-7);
    public static readonly Tol F16 = new(1e-3, 1e-5);
    public static readonly Tol BF16 = new(1.6e-2, 1e-5);
    public static Tol For<T>() => typeof(T) == typeof(float) ? F32 : F64;
}

public static class Check
{
    public static void Close(ReadOnlySpan<double> expected, ReadOnlySpan<double> actual, Tol tol, string what)
    {
        Assert.True(expected.Length == actual.Length, $"{what}: length {actual.Length}, expected {expected.Length}");
        for (int i = 0; i < expected.Length; i++)
        {
            double e = expected[i], a = actual[i];
            if (double.IsNaN(e) && double.IsNaN(a)) continue;
            if (e == a) continue;
            Assert.True(Math.Abs(a - e) <= tol.Atol + tol.Rtol * Math.Abs(e),
                $"{what}[{i}]: got {a:R}, expected {e:R} (diff {Math.Abs(a - e):E3}, allowed {tol.Atol + tol.Rtol * Math.Abs(e):E3})");
        }
    }

    public static void Close<T>(ReadOnlySpan<double> expected, ReadOnlySpan<T> actual, Tol tol, string what) where T : unmanaged
    {
        var a = new double[actual.Length];
        for (int i = 0; i < a.Length; i++) a[i] = ToDouble(actual[i]);
        Close(expected, a, tol, what);
    }

    public static double ToDouble<T>(T v) => v switch { float f => f, double d => d, Half h => (double)h, BFloat16 b => (float)b, _ => throw new NotSupportedException() };
    public static T From<T>(double v) => typeof(T) == typeof(float) ? (T)(object)(float)v : (T)(object)v;
    public static T[] Arr<T>(double[] a) => Array.ConvertAll(a, From<T>);

    public static void BitEqual<T>(ReadOnlySpan<T> a, ReadOnlySpan<T> b, string what) where T : unmanaged
    {
        Assert.True(a.Length == b.Length, $"{what}: lengths {a.Length} and {b.Length}");
        int size = System.Runtime.CompilerServices.Unsafe.SizeOf<T>();
        var ab = System.Runtime.InteropServices.MemoryMarshal.AsBytes(a);
        var bb = System.Runtime.InteropServices.MemoryMarshal.AsBytes(b);
        for (int i = 0; i < a.Length; i++)
            if (!ab.Slice(i * size, size).SequenceEqual(bb.Slice(i * size, size)))
                Assert.Fail($"{what}: first bit difference at [{i}]: {ToDouble(a[i]):R} vs {ToDouble(b[i]):R}");
    }
}
