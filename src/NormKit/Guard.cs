using System.Diagnostics.CodeAnalysis;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace NormKit;

/// <summary>
/// Argument checks shared by the functional API and the layers. Every message names the
/// argument, the expected value and the actual one. Checks run before any state is touched.
/// Each check is a compare and a call: the message is built in a [DoesNotReturn] thrower, so
/// the checks inline small on the hot path and a passing check allocates nothing.
/// </summary>
internal static class Guard
{
    public static string Shape(ReadOnlySpan<int> shape) => "[" + string.Join(", ", shape.ToArray()) + "]";

    public static void Eps(double eps, string name = "eps")
    {
        if (!(eps > 0) || double.IsInfinity(eps)) ThrowOutOfRange(name, eps, $"{name} must be a finite number > 0 but was {eps}.");
    }

    public static void Finite(double value, string name)
    {
        if (!double.IsFinite(value)) ThrowOutOfRange(name, value, $"{name} must be a finite number but was {value}.");
    }

    public static void Momentum(double momentum, string name = "momentum")
    {
        if (!(momentum >= 0 && momentum <= 1)) ThrowOutOfRange(name, momentum, $"{name} must lie in [0, 1] but was {momentum}.");
    }

    public static void FiniteAtLeast(double value, double min, string name)
    {
        if (!(value >= min) || double.IsInfinity(value)) ThrowOutOfRange(name, value, $"{name} must be a finite number >= {min} but was {value}.");
    }

    public static void Positive(int value, string name)
    {
        if (value <= 0) ThrowOutOfRange(name, value, $"{name} must be > 0 but was {value}.");
    }

    public static void NonNegative(long value, string name)
    {
        if (value < 0) ThrowOutOfRange(name, value, $"{name} must be >= 0 but was {value}.");
    }

    /// <summary>Checks a length ("weight has length 5 but normalizedShape [2, 3] needs 6.").</summary>
    public static void Length<T>(ReadOnlySpan<T> span, long expected, string name, string what, ReadOnlySpan<int> shape = default)
    {
        if (span.Length != expected) ThrowLength(span.Length, expected, name, what, shape);
    }

    /// <summary>Checks an optional span: empty means absent, otherwise it must have the expected length.</summary>
    public static void OptionalLength<T>(ReadOnlySpan<T> span, long expected, string name, string what, ReadOnlySpan<int> shape = default)
    {
        if (!span.IsEmpty) Length(span, expected, name, what, shape);
    }

    public static long Product(ReadOnlySpan<int> shape, string name)
    {
        long n = 1;
        foreach (int d in shape)
        {
            if (d < 0) throw new ArgumentException($"{name} {Shape(shape)} has a negative dimension {d}.", name);
            n *= d;
        }
        if (n > int.MaxValue)
            throw new ArgumentException($"{name} {Shape(shape)} has {n} elements; at most {int.MaxValue} are supported.", name);
        return n;
    }

    public static void NoOverlap<T>(ReadOnlySpan<T> input, string inputName, ReadOnlySpan<T> output, string outputName)
    {
        if (!input.IsEmpty && !output.IsEmpty && input.Overlaps(output))
            ThrowArgument($"{outputName} overlaps {inputName}; the output must be a separate buffer.", outputName);
    }

    public static int[] ShapeOf<T>(Tensor<T> t, string name)
    {
        ArgumentNullException.ThrowIfNull(t, name);
        if (!t.IsDense) throw new ArgumentException($"{name} must be a dense tensor (contiguous, row-major) but is strided.", name);
        var lengths = t.Lengths;
        var shape = new int[lengths.Length];
        for (int i = 0; i < shape.Length; i++) shape[i] = checked((int)lengths[i]);
        return shape;
    }

    /// <summary>A new zeroed dense tensor with the shape of <paramref name="like"/>.</summary>
    public static Tensor<T> NewLike<T>(Tensor<T> like) => Tensor.Create(new T[like.FlattenedLength], like.Lengths);

    /// <summary>The elements of a dense tensor as a span, without copying.</summary>
    public static Span<T> Span<T>(Tensor<T> t) =>
        t.FlattenedLength == 0 ? default : MemoryMarshal.CreateSpan(ref t.GetPinnableReference(), checked((int)t.FlattenedLength));

    public static Span<T> OptionalSpan<T>(Tensor<T>? t, string name)
    {
        if (t is null) return default;
        ShapeOf(t, name);
        return Span(t);
    }

    [DoesNotReturn]
    public static void ThrowArgument(string message, string name) => throw new ArgumentException(message, name);

    [DoesNotReturn]
    private static void ThrowOutOfRange(string name, object value, string message) => throw new ArgumentOutOfRangeException(name, value, message);

    [DoesNotReturn]
    private static void ThrowLength(int actual, long expected, string name, string what, ReadOnlySpan<int> shape) =>
        throw new ArgumentException($"{name} has length {actual} but {what}{(shape.IsEmpty ? "" : " " + Shape(shape))} needs {expected}.", name);
}
