using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.InteropServices;
using NormKit.Layers;

namespace NormKit.Serialization;

/// <summary>How <see cref="StateDict.Load{T}(string, StateDictLoadOptions, ValueTuple{string, NormLayer{T}}[])"/> treats a file.</summary>
public sealed record StateDictLoadOptions
{
    /// <summary>The defaults: strict, no key prefix, values validated.</summary>
    public static StateDictLoadOptions Default { get; } = new();

    /// <summary>
    /// PyTorch's <c>strict</c>. True (the default): a key the layers expect but the file lacks,
    /// or a key the file holds under <see cref="KeyPrefix"/> that no layer takes, throws.
    /// False: such keys are reported in <see cref="StateDictLoadResult"/> and the keys that are
    /// present load. A key whose shape or dtype does not fit throws in both modes.
    /// </summary>
    public bool Strict { get; init; } = true;

    /// <summary>
    /// A prefix (e.g. "model.encoder.") before every key the layers are looked up under. Keys of
    /// the file outside the prefix are ignored: neither loaded nor reported.
    /// </summary>
    public string KeyPrefix { get; init; } = "";

    /// <summary>
    /// When true (the default), values that no trained layer holds are refused before anything
    /// changes: a weight, bias or running statistic that is NaN or infinite once stored as T, a
    /// negative running_var or running_phi, a negative num_batches_tracked (or iters). False loads them as they are.
    /// </summary>
    public bool ValidateValues { get; init; } = true;
}

/// <summary>What a load did not match: PyTorch's <c>missing_keys</c> and <c>unexpected_keys</c> (empty after a strict load).</summary>
public sealed record StateDictLoadResult(IReadOnlyList<string> MissingKeys, IReadOnlyList<string> UnexpectedKeys);

/// <summary>
/// Saves and loads layers' state in the safetensors format under PyTorch's state_dict names
/// ("prefix.weight", "prefix.bias", "prefix.running_mean", "prefix.running_var",
/// "prefix.num_batches_tracked" as an int64 scalar), so a state saved by PyTorch loads here
/// and the reverse. Loading is all or nothing: every key, dtype, shape and value is checked for
/// every layer before any layer changes.
/// </summary>
public static class StateDict
{
    /// <summary>Writes the state of <paramref name="modules"/> (each with its key prefix, "" for none), with a SHA-256 of the data.</summary>
    public static void Save<T>(string path, params (string Prefix, NormLayer<T> Layer)[] modules) where T : unmanaged, IFloatingPointIeee754<T>
    {
        var tensors = new List<(string, SafeTensor)>();
        foreach (var (prefix, layer) in modules)
        {
            foreach (var t in layer.Tensors)
                tensors.Add((Key(prefix, t.Name), typeof(T) == typeof(float)
                    ? SafeTensors.FromFloats(MemoryMarshal.Cast<T, float>(t.Data.AsSpan()), t.Shape)
                    : SafeTensors.FromDoubles(MemoryMarshal.Cast<T, double>(t.Data.AsSpan()), t.Shape)));
            if (layer.BatchesTracked is long n)
            {
                var (name, shape) = layer.BatchesTrackedKey;
                tensors.Add((Key(prefix, name), new SafeTensor("I64", shape, BitConverter.GetBytes(n))));
            }
        }
        SafeTensors.Write(path, tensors, new Dictionary<string, string> { ["format"] = "pt" });
    }

    /// <summary>
    /// Loads the state of <paramref name="modules"/> from a safetensors file, strictly: every
    /// key the layers expect must be there and no other key may be. F32, F64, F16 and BF16
    /// values are converted to T; num_batches_tracked may be a scalar or of shape [1], and is 0
    /// when absent. Anything that does not fit throws <see cref="InvalidDataException"/> naming
    /// the file and the key, and no layer changes.
    /// </summary>
    public static void Load<T>(string path, params (string Prefix, NormLayer<T> Layer)[] modules) where T : unmanaged, IFloatingPointIeee754<T>
        => Load(path, StateDictLoadOptions.Default, modules);

    /// <summary>
    /// Loads the state of <paramref name="modules"/> from a safetensors file as
    /// <paramref name="options"/> say (PyTorch's <c>strict</c>, a key prefix, value checks).
    /// With <c>Strict = false</c> a checkpoint that also holds other layers (convolutions,
    /// linear layers) loads its normalization layers, and the keys that did not match are
    /// returned. Loading stays all or nothing for the keys it loads. Without num_batches_tracked
    /// in the file, a strict load sets it to 0 (as files from PyTorch before 0.4.1 need) and a
    /// non-strict one leaves it and reports the key missing.
    /// </summary>
    public static StateDictLoadResult Load<T>(string path, StateDictLoadOptions options, params (string Prefix, NormLayer<T> Layer)[] modules)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(modules);
        var file = SafeTensors.Read(path);
        var used = new HashSet<string>(StringComparer.Ordinal);
        var missing = new List<(string Key, string Expected)>();
        var writes = new List<(T[] Target, T[] Values)>();
        var counts = new List<(NormLayer<T> Layer, long Value)>();
        foreach (var (prefix, layer) in modules)
        {
            ArgumentNullException.ThrowIfNull(layer, nameof(modules));
            foreach (var target in layer.Tensors)
            {
                string key = options.KeyPrefix + Key(prefix, target.Name);
                if (!file.TryGetValue(key, out var t))
                {
                    missing.Add((key, $" (expected shape {SafeTensors.ShapeText(target.Shape)})"));
                    continue;
                }
                if (t.DType is not ("F32" or "F64" or "F16" or "BF16"))
                    throw new InvalidDataException($"{path}: key '{key}' has dtype {t.DType}; a floating-point tensor is expected.");
                if (!t.Shape.SequenceEqual(target.Shape))
                    throw new InvalidDataException($"{path}: key '{key}' has shape {SafeTensors.ShapeText(t.Shape)} in the file but the layer expects {SafeTensors.ShapeText(target.Shape)}.");
                var values = t.ToDoubles().Select(T.CreateTruncating).ToArray();
                if (options.ValidateValues) CheckValues(path, key, target.Name, values);
                writes.Add((target.Data, values));
                used.Add(key);
            }
            if (layer.BatchesTracked is not null)
            {
                string countName = layer.BatchesTrackedKey.Name;
                string key = options.KeyPrefix + Key(prefix, countName);
                if (file.TryGetValue(key, out var t))
                {
                    if (t.DType is not ("I64" or "I32") || t.Elements != 1 || t.Shape.Length > 1)
                        throw new InvalidDataException($"{path}: key '{key}' must be an integer scalar or [1], but is {t.DType} of shape {SafeTensors.ShapeText(t.Shape)}.");
                    long value = t.DType == "I64" ? BinaryPrimitives.ReadInt64LittleEndian(t.Bytes) : BinaryPrimitives.ReadInt32LittleEndian(t.Bytes);
                    if (options.ValidateValues && value < 0)
                        throw new InvalidDataException($"{path}: key '{key}' holds {value}; {countName} must be >= 0 (set ValidateValues = false to load it anyway).");
                    counts.Add((layer, value));
                    used.Add(key);
                }
                else if (options.Strict) counts.Add((layer, 0));
                else missing.Add((key, ""));
            }
        }
        var unexpected = file.Keys.Where(k => k.StartsWith(options.KeyPrefix, StringComparison.Ordinal) && !used.Contains(k))
            .Order(StringComparer.Ordinal).ToList();
        if (options.Strict && missing.Count > 0)
            throw new InvalidDataException($"{path}: missing key{(missing.Count > 1 ? "s" : "")} {string.Join(", ", missing.Select(m => $"'{m.Key}'{m.Expected}"))}.");
        if (options.Strict && unexpected.Count > 0)
            throw new InvalidDataException($"{path}: unexpected key{(unexpected.Count > 1 ? "s" : "")} {string.Join(", ", unexpected.Select(k => $"'{k}'"))}.");
        // Everything checked: now change the layers.
        foreach (var (target, values) in writes) values.CopyTo(target, 0);
        foreach (var (layer, value) in counts) layer.BatchesTracked = value;
        return new StateDictLoadResult(missing.Select(m => m.Key).ToList(), unexpected);
    }

    // Values no layer holds: NaN or infinity anywhere, a negative running variance.
    private static void CheckValues<T>(string path, string key, string name, T[] values) where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int i = 0; i < values.Length; i++)
        {
            if (!T.IsFinite(values[i]))
                throw new InvalidDataException($"{path}: key '{key}' holds {values[i]} at index {i}{(typeof(T) == typeof(float) ? " (as float)" : "")}; {name} must be finite (set ValidateValues = false to load it anyway).");
            if ((name is "running_var" or "running_phi") && values[i] < T.Zero)
                throw new InvalidDataException($"{path}: key '{key}' holds {values[i]} at index {i}; {(name == "running_var" ? "a running variance" : "a running quadratic mean")} must be >= 0 (set ValidateValues = false to load it anyway).");
        }
    }

    private static string Key(string prefix, string name) => prefix.Length == 0 ? name : prefix + "." + name;
}
