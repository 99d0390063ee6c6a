using System.Globalization;

namespace NormKit;

/// <summary>
/// The bfloat16 format (1 sign, 8 exponent, 7 mantissa bits: float32's range with 8 bits of
/// precision), as PyTorch's torch.bfloat16. Conversion from float rounds to nearest even and
/// keeps NaN a NaN.
/// </summary>
public readonly struct BFloat16 : IEquatable<BFloat16>
{
    /// <summary>The 16 stored bits: the upper half of the float32 bit pattern.</summary>
    public ushort RawValue { get; }

    private BFloat16(ushort raw) => RawValue = raw;

    /// <summary>The value with the given bits.</summary>
    public static BFloat16 FromRaw(ushort raw) => new(raw);

    /// <summary>Rounds a float to the nearest bfloat16 (ties to even).</summary>
    public static explicit operator BFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return new((ushort)((bits >> 16) | 0x40));   // a quiet NaN, sign kept
        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return new((ushort)((bits + rounding) >> 16));
    }

    /// <summary>The exact float value.</summary>
    public static explicit operator float(BFloat16 value) => BitConverter.UInt32BitsToSingle((uint)value.RawValue << 16);

    /// <inheritdoc/>
    public bool Equals(BFloat16 other) => RawValue == other.RawValue;
    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is BFloat16 b && Equals(b);
    /// <inheritdoc/>
    public override int GetHashCode() => RawValue;
    /// <inheritdoc/>
    public override string ToString() => ((float)this).ToString(CultureInfo.InvariantCulture);
    /// <summary>Bitwise equality.</summary>
    public static bool operator ==(BFloat16 a, BFloat16 b) => a.RawValue == b.RawValue;
    /// <summary>Bitwise inequality.</summary>
    public static bool operator !=(BFloat16 a, BFloat16 b) => a.RawValue != b.RawValue;
}
