using NormKit.Tests.Reference;
using NormKit.Tests.Support;

namespace NormKit.Tests;

/// <summary>Half and BFloat16 inputs and outputs with float32 parameters, at PyTorch's mixed-precision tolerances.</summary>
// Fast, and touches every kernel: .ci/run runs it on every instruction-set leg.
[Trait("Category", "Interop")]
public class MixedPrecisionTests
{
    private static T[] Low<T>(double[] v) where T : unmanaged =>
        typeof(T) == typeof(Half) ? (T[])(object)v.Select(a => (Half)a).ToArray() : (T[])(object)v.Select(a => (BFloat16)(float)a).ToArray();

    private static double[] D<T>(T[] v) where T : unmanaged =>
        typeof(T) == typeof(Half) ? ((Half[])(object)v).Select(a => (double)a).ToArray() : ((BFloat16[])(object)v).Select(a => (double)(float)a).ToArray();

    private static Tol TolFor<T>() => typeof(T) == typeof(Half) ? Tol.F16 : Tol.BF16;

    [Fact] public void LayerNorm_and_RMSNorm_in_Half() => RowNorms<Half>();
    [Fact] public void LayerNorm_and_RMSNorm_in_BFloat16() => RowNorms<BFloat16>();
    [Fact] public void BatchNorm_and_GroupNorm_in_Half() => ChannelNorms<Half>();
    [Fact] public void BatchNorm_and_GroupNorm_in_BFloat16() => ChannelNorms<BFloat16>();

    private static void RowNorms<T>() where T : unmanaged
    {
        const int rows = 6, cols = 40;
        // Activations up to about 1000: their squares overflow Half (max 65504).
        var xl = Low<T>(Data.Normal(1, rows * cols, 300, 400));
        var x = D(xl);
        var w = Data.F(Data.Normal(2, cols, 1, 0.3)); var b = Data.F(Data.Normal(3, cols));
        var dyl = Low<T>(Data.Normal(4, rows * cols)); var dy = D(dyl);
        var y = new T[x.Length]; var mean = new double[rows]; var rstd = new double[rows];
        Mixed.LayerNorm<T>(xl, [rows, cols], [cols], y, w, b, 1e-5, mean, rstd);
        Check.Close(Oracle.LayerNorm(x, rows, cols, Data.D(w), Data.D(b), 1e-5).Y, D(y), TolFor<T>(), "LayerNorm y");
        var dx = new T[x.Length]; var dw = new float[cols]; var db = new float[cols];
        Mixed.LayerNormBackward<T>(dyl, xl, [rows, cols], [cols], mean, rstd, w, dx, dw, db);
        var (edx, edw, edb) = Oracle.LayerNormBackward(dy, x, rows, cols, Data.D(w), 1e-5);
        Check.Close(edx, D(dx), TolFor<T>(), "LayerNorm dx");
        Check.Close(edw, dw, Tol.F32, "LayerNorm dWeight (float)");
        Check.Close(edb, db, Tol.F32, "LayerNorm dBias (float)");

        var r = new T[x.Length];
        Mixed.RmsNorm<T>(xl, [rows, cols], [cols], r, w, 1e-6, rstd);
        var (ry, _) = Oracle.RmsNorm(x, rows, cols, Data.D(w), 1e-6);
        Check.Close(ry, D(r), TolFor<T>(), "RMSNorm y");
        Assert.All(D(r), v => Assert.True(double.IsFinite(v)));
        var rdx = new T[x.Length];
        Mixed.RmsNormBackward<T>(dyl, xl, [rows, cols], [cols], rstd, w, rdx);
        Check.Close(Oracle.RmsNormBackward(dy, x, rows, cols, Data.D(w), 1e-6), D(rdx), TolFor<T>(), "RMSNorm dx");
    }

    private static void ChannelNorms<T>() where T : unmanaged
    {
        const int n = 4, c = 6, s = 10;
        var xl = Low<T>(Data.Normal(5, n * c * s, 500, 300)); var x = D(xl);
        var w = Data.F(Data.Normal(6, c, 1, 0.3)); var b = Data.F(Data.Normal(7, c));
        var dyl = Low<T>(Data.Normal(8, n * c * s)); var dy = D(dyl);
        var y = new T[x.Length]; var rm = new float[c]; var rv = Enumerable.Repeat(1f, c).ToArray();
        var mean = new double[c]; var rstd = new double[c];
        Mixed.BatchNorm<T>(xl, [n, c, s], y, rm, rv, w, b, training: true, saveMean: mean, saveRstd: rstd);
        Check.Close(Oracle.BatchNormTrain(x, n, c, s, false, Data.D(w), Data.D(b), 1e-5), D(y), TolFor<T>(), "BatchNorm y");
        var (m, v) = Oracle.ChannelStats(x, n, c, s, false);
        Check.Close(m.Select(a => 0.1 * a).ToArray(), rm, Tol.F32, "running_mean (float)");
        var dx = new T[x.Length]; var dw = new float[c]; var db = new float[c];
        Mixed.BatchNormBackward<T>(dyl, xl, [n, c, s], w, mean, rstd, true, dx, dw, db);
        var (edx, edw, edb) = Oracle.BatchNormBackwardTrain(dy, x, n, c, s, false, Data.D(w), 1e-5);
        Check.Close(edx, D(dx), TolFor<T>(), "BatchNorm dx");
        Check.Close(edw, dw, Tol.F32, "BatchNorm dWeight");

        var g = new T[x.Length]; var gm = new double[n * 2]; var gr = new double[n * 2];
        Mixed.GroupNorm<T>(xl, [n, c, s], 2, g, w, b, 1e-5, false, gm, gr);
        Check.Close(Oracle.GroupNorm(x, n, c, s, false, 2, Data.D(w), Data.D(b), 1e-5).Y, D(g), TolFor<T>(), "GroupNorm y");
        var gdx = new T[x.Length];
        Mixed.GroupNormBackward<T>(dyl, xl, [n, c, s], 2, w, gm, gr, gdx);
        Check.Close(Oracle.GroupNormBackward(dy, x, n, c, s, false, 2, Data.D(w), 1e-5).Dx, D(gdx), TolFor<T>(), "GroupNorm dx");
    }

    [Fact]
    public void BFloat16_rounds_to_nearest_even_and_keeps_specials()
    {
        Assert.Equal(0x3F80, ((BFloat16)1f).RawValue);
        Assert.Equal(1f, (float)(BFloat16)1f);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
        Assert.Equal(1f, (float)(BFloat16)(1f + MathF.Pow(2, -8)));
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties go to 1 + 2^-6.
        Assert.Equal(1f + MathF.Pow(2, -6), (float)(BFloat16)(1f + 3 * MathF.Pow(2, -8)));
        Assert.True(float.IsNaN((float)(BFloat16)float.NaN));
        Assert.Equal(float.PositiveInfinity, (float)(BFloat16)float.PositiveInfinity);
        Assert.Equal(-2.5f, (float)(BFloat16)(-2.5f));
        Assert.Equal(3e38f, (float)(BFloat16)3e38f, 3e36f);
    }

    [Fact]
    public void Other_low_precision_types_are_refused()
    {
        Assert.Throws<NotSupportedException>(() => Mixed.LayerNorm<short>(new short[4], [1, 4], [4], new short[4]));
    }
}
