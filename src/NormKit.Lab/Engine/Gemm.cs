using System.Numerics;

namespace NormKit.Lab.Engine;

/// <summary>
/// Matrix products for the lab's layers: C = op(A) op(B), or C += op(A) op(B), row-major with
/// leading dimensions, op(X) = X or its transpose. Float and double (the gradient checks run in
/// double).
/// </summary>
public static class Gemm
{
    /// <summary>
    /// C[m x n] (+)= op(A)[m x k] * op(B)[k x n]. A is m x k (lda &gt;= k), or k x m when
    /// <paramref name="transA"/> (lda &gt;= m); B is k x n (ldb &gt;= n), or n x k when
    /// <paramref name="transB"/> (ldb &gt;= k); C is m x n (ldc &gt;= n).
    /// </summary>
    public static void Multiply<T>(bool transA, bool transB, int m, int n, int k,
        ReadOnlySpan<T> a, int lda, ReadOnlySpan<T> b, int ldb, Span<T> c, int ldc, bool accumulate)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (!transB)
        {
            for (int i = 0; i < m; i++)
            {
                var row = c.Slice(i * ldc, n);
                if (!accumulate) row.Clear();
                for (int p = 0; p < k; p++)
                {
                    T v = transA ? a[p * lda + i] : a[i * lda + p];
                    if (v != T.Zero) System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(b.Slice(p * ldb, n), v, row, row);
                }
            }
            return;
        }
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                if (!transA && transB)
                {
                    T d = System.Numerics.Tensors.TensorPrimitives.Dot(a.Slice(i * lda, k), b.Slice(j * ldb, k));
                    c[i * ldc + j] = accumulate ? c[i * ldc + j] + d : d;
                    continue;
                }
                T s = T.Zero;
                for (int p = 0; p < k; p++)
                    s += (transA ? a[p * lda + i] : a[i * lda + p]) * (transB ? b[j * ldb + p] : b[p * ldb + j]);
                c[i * ldc + j] = accumulate ? c[i * ldc + j] + s : s;
            }
    }
}
