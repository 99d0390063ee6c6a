using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using NormKit.Kernels;

namespace NormKit.Benchmarks;

/// <summary>
/// One implementation the benchmark times: NormKit, ONNX Runtime or PyTorch. A peer prepares a
/// case on given inputs, then times batches of calls when asked, so that the benchmark can
/// interleave the peers in rounds; its output is compared with NormKit's.
/// </summary>
public interface IPeer : IDisposable
{
    string Name { get; }
    bool Has(BenchCase c);
    void Prepare(BenchCase c, int threads, float[] x, float[] dy);
    /// <summary>Per-call times in ms of at least <paramref name="calls"/> calls and <paramref name="seconds"/> seconds.</summary>
    IReadOnlyList<double> Time(int calls, double seconds);
    /// <summary>y, or dx for "fwd+bwd", in memory order.</summary>
    float[] Output();
}

/// <summary>Times calls of an action; the same loop for every in-process peer.</summary>
public static class Sampler
{
    public static List<double> Time(Action run, int calls, double seconds)
    {
        var times = new List<double>(Math.Max(calls, 64));
        long start = Stopwatch.GetTimestamp();
        while (times.Count < calls || Stopwatch.GetElapsedTime(start).TotalSeconds < seconds)
        {
            long t0 = Stopwatch.GetTimestamp();
            run();
            times.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
        }
        return times;
    }

    /// <summary>The q-quantile (0..1) by linear interpolation.</summary>
    public static double Quantile(IReadOnlyList<double> values, double q)
    {
        if (values.Count == 0) return double.NaN;
        var sorted = values.Order().ToArray();
        double pos = q * (sorted.Length - 1);
        int lo = (int)Math.Floor(pos), hi = Math.Min(lo + 1, sorted.Length - 1);
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
    }
}

/// <summary>NormKit through its span API on preallocated buffers.</summary>
public sealed class NormKitPeer : IPeer
{
    private NormKitOp? _op;
    public string Name => "NormKit";
    public bool Has(BenchCase c) => true;

    public void Prepare(BenchCase c, int threads, float[] x, float[] dy)
    {
        NormKitThreading.MaxDegreeOfParallelism = threads;
        _op = new NormKitOp(c, x, dy);
        for (int i = 0; i < 3; i++) _op.Run();
    }

    public IReadOnlyList<double> Time(int calls, double seconds) => Sampler.Time(_op!.Run, calls, seconds);
    public float[] Output() => _op!.Output();

    /// <summary>Bytes allocated per call in steady state (every thread), over <paramref name="calls"/> calls.</summary>
    public double AllocatedPerCall(int calls)
    {
        _op!.Run();
        long before = GC.GetTotalAllocatedBytes(precise: true);
        for (int i = 0; i < calls; i++) _op.Run();
        return (GC.GetTotalAllocatedBytes(precise: true) - before) / (double)calls;
    }

    public void Dispose() { }
}

/// <summary>ONNX Runtime in-process (inference only, NCHW only), preallocated input and output.</summary>
public sealed class OrtPeer : IPeer
{
    private OrtOp? _op;
    public string Name => "ORT";
    public bool Has(BenchCase c) => c.OrtHasIt;

    public void Prepare(BenchCase c, int threads, float[] x, float[] dy)
    {
        _op?.Dispose();
        _op = new OrtOp(c, threads, x);
        for (int i = 0; i < 3; i++) _op.Run();
    }

    public string Model => _op?.Model ?? "";
    public IReadOnlyList<double> Time(int calls, double seconds) => Sampler.Time(_op!.Run, calls, seconds);
    public float[] Output() => _op!.Output();
    public void Dispose() { _op?.Dispose(); _op = null; }
}

/// <summary>
/// PyTorch in a python3 process (torch_peer.py) that takes one command per line. With
/// <c>keepPages</c> glibc is told to keep freed memory (MALLOC_MMAP_THRESHOLD_ and
/// MALLOC_TRIM_THRESHOLD_ high), so a new output reuses pages as PyTorch's caching does in a
/// training loop; without, glibc maps and unmaps every large output (its default).
/// </summary>
public sealed class TorchPeer : IPeer
{
    private readonly Process _process;
    private readonly string _x = Path.GetTempFileName(), _dy = Path.GetTempFileName(), _out = Path.GetTempFileName();
    private int _elements;

    public string Name { get; }
    public string Version { get; }

    private TorchPeer(string name, Process process, string version, System.Collections.Concurrent.ConcurrentQueue<string> errors)
    {
        Name = name; _process = process; Version = version; _errors = errors;
    }

    /// <summary>Starts the peer; null with the reason when python3 or torch is missing.</summary>
    public static (TorchPeer? Peer, string Why) Start(string name, bool keepPages)
    {
        string python = File.Exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
        var psi = new ProcessStartInfo(python, [Path.Combine(AppContext.BaseDirectory, "torch_peer.py")])
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true,
        };
        if (keepPages)
        {
            // 1 GiB: no output of the benchmark reaches it, so glibc serves them all from the heap and keeps them.
            psi.Environment["MALLOC_MMAP_THRESHOLD_"] = (1L << 30).ToString();
            psi.Environment["MALLOC_TRIM_THRESHOLD_"] = (1L << 30).ToString();
        }
        Process p;
        try { p = Process.Start(psi)!; }
        catch (System.ComponentModel.Win32Exception) { return (null, "absent (no python3)"); }
        // Drained as it comes, so that warnings on stderr never fill the pipe and stall the peer.
        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) errors.Enqueue(e.Data); };
        p.BeginErrorReadLine();
        string? first = p.StandardOutput.ReadLine();
        if (first is null)
        {
            p.WaitForExit();
            string err = string.Join("\n", errors);
            return (null, err.Contains("No module named") ? "absent (install Debian's python3-torch: bench/install-peers.sh)" : $"failed: {errors.LastOrDefault()}");
        }
        string version = JsonNode.Parse(first)!["torch"]!.GetValue<string>();
        return (new TorchPeer(name, p, version, errors), "");
    }

    private readonly System.Collections.Concurrent.ConcurrentQueue<string> _errors;

    public bool Has(BenchCase c) => c.TorchHasIt;

    public void Prepare(BenchCase c, int threads, float[] x, float[] dy)
    {
        _elements = x.Length;
        File.WriteAllBytes(_x, System.Runtime.InteropServices.MemoryMarshal.AsBytes(x.AsSpan()).ToArray());
        File.WriteAllBytes(_dy, System.Runtime.InteropServices.MemoryMarshal.AsBytes(dy.AsSpan()).ToArray());
        Ask(new JsonObject
        {
            ["case"] = new JsonObject { ["op"] = c.Op, ["shape"] = new JsonArray(c.Shape.Select(d => (JsonNode)d).ToArray()), ["channelsLast"] = c.ChannelsLast, ["mode"] = c.Mode },
            ["threads"] = threads, ["x"] = _x, ["dy"] = _dy,
        });
    }

    public IReadOnlyList<double> Time(int calls, double seconds) =>
        Ask(new JsonObject { ["time"] = new JsonObject { ["calls"] = calls, ["seconds"] = seconds } })["ms"]!.AsArray().Select(v => v!.GetValue<double>()).ToList();

    public float[] Output()
    {
        Ask(new JsonObject { ["output"] = _out });
        var bytes = File.ReadAllBytes(_out);
        var result = new float[_elements];
        System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes).CopyTo(result);
        return result;
    }

    private JsonNode Ask(JsonObject message)
    {
        _process.StandardInput.WriteLine(message.ToJsonString());
        _process.StandardInput.Flush();
        string? line = _process.StandardOutput.ReadLine();
        if (line is null)
        {
            _process.WaitForExit(5000);
            throw new InvalidOperationException($"The PyTorch peer stopped: {_errors.LastOrDefault()}");
        }
        return JsonNode.Parse(line)!;
    }

    public void Dispose()
    {
        try { _process.StandardInput.WriteLine("{\"quit\": true}"); _process.StandardInput.Flush(); _process.WaitForExit(5000); } catch (IOException) { }
        _process.Dispose();
        foreach (var f in new[] { _x, _dy, _out }) File.Delete(f);
    }
}
