using System.Numerics;
using NormKit.Layers;

namespace NormKit.Serialization;

/// <summary>
/// Saves and loads layers' state in the safetensors format under PyTorch's state_dict names
/// ("prefix.weight", "prefix.bias", "prefix.running_mean", "prefix.running_var",
/// "prefix.num_batches_tracked" as an int64 scalar), so a state saved by PyTorch loads here
/// and the reverse. Loading is all or nothing: every key, dtype and shape is checked for every
/// layer before any layer changes.
/// </summary>
public static class StateDict
{
    /// <summary>Writes the state of <paramref name="modules"/> (each with its key prefix, "" for none).</summary>
    public static void Save<T>(string path, params (string Prefix, NormLayer<T> Layer)[] modules) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var tensors = new List<(string, SafeTensor)>();
        foreach (var (prefix, layer) in modules)
        {
            foreach (var (name, shape, data) in layer.StateTensors())
                tensors.Add((Key(prefix, name), typeof(T) == typeof(float)
                    ? SafeTensors.FromFloats(System.Runtime.InteropServices.MemoryMarshal.Cast<T, float>(data.AsSpan()), shape)
                    : SafeTensors.FromDoubles(System.Runtime.InteropServices.MemoryMarshal.Cast<T, double>(data.AsSpan()), shape)));
            if (layer.BatchesTracked is long n) tensors.Add((Key(prefix, "num_batches_tracked"), SafeTensors.FromInt64(n)));
        }
        SafeTensors.Write(path, tensors, new Dictionary<string, string> { ["format"] = "pt" });
    }

    /// <summary>
    /// Loads the state of <paramref name="modules"/> from a safetensors file. F32 and F64 values
    /// are converted to T; num_batches_tracked may be a scalar or of shape [1], and defaults to 0
    /// when absent. A missing or unexpected key, a shape or dtype that does not fit, or a
    /// malformed file throws <see cref="InvalidDataException"/> naming the key, and no layer changes.
    /// </summary>
    public static void Load<T>(string path, params (string Prefix, NormLayer<T> Layer)[] modules) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var file = SafeTensors.Read(path);
        var used = new HashSet<string>();
        var writes = new List<(T[] Target, double[] Values)>();
        var counts = new List<(NormLayer<T> Layer, long Value)>();
        foreach (var (prefix, layer) in modules)
        {
            foreach (var (name, shape, data) in layer.StateTensors())
            {
                string key = Key(prefix, name);
                if (!file.TryGetValue(key, out var t))
                    throw new InvalidDataException($"{path}: missing key '{key}' (expected shape {SafeTensors.ShapeText(shape)}).");
                if (t.DType is not ("F32" or "F64" or "F16" or "BF16"))
                    throw new InvalidDataException($"{path}: key '{key}' has dtype {t.DType}; a floating-point tensor is expected.");
                if (!t.Shape.SequenceEqual(shape))
                    throw new InvalidDataException($"{path}: key '{key}' has shape {SafeTensors.ShapeText(t.Shape)} in the file but the layer expects {SafeTensors.ShapeText(shape)}.");
                writes.Add((data, t.ToDoubles()));
                used.Add(key);
            }
            if (layer.BatchesTracked is not null)
            {
                string key = Key(prefix, "num_batches_tracked");
                long value = 0;
                if (file.TryGetValue(key, out var t))
                {
                    if (t.DType is not ("I64" or "I32") || t.Elements != 1 || t.Shape.Length > 1)
                        throw new InvalidDataException($"{path}: key '{key}' must be an integer scalar or [1], but is {t.DType} of shape {SafeTensors.ShapeText(t.Shape)}.");
                    value = (long)t.ToDoubles()[0];
                    used.Add(key);
                }
                counts.Add((layer, value));
            }
        }
        var unexpected = file.Keys.Where(k => !used.Contains(k)).OrderBy(k => k, StringComparer.Ordinal).ToList();
        if (unexpected.Count > 0)
            throw new InvalidDataException($"{path}: unexpected key{(unexpected.Count > 1 ? "s" : "")} {string.Join(", ", unexpected.Select(k => $"'{k}'"))}.");
        // Everything checked: now change the layers.
        foreach (var (target, values) in writes)
            for (int i = 0; i < target.Length; i++) target[i] = T.CreateTruncating(values[i]);
        foreach (var (layer, value) in counts) layer.BatchesTracked = value;
    }

    private static string Key(string prefix, string name) => prefix.Length == 0 ? name : prefix + "." + name;
}
