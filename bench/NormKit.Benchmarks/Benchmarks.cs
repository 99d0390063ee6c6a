using BenchmarkDotNet.Attributes;
using NormKit.Kernels;

namespace NormKit.Benchmarks;

/// <summary>What the current run measures; set by Program before BenchmarkDotNet starts (in-process).</summary>
public static class Plan
{
    public static IReadOnlyList<BenchCase> Cases { get; set; } = BenchCase.All();
    public static long RooflineBytes { get; set; } = 256L << 20;
    public static int[] Threads { get; set; } = [1, 2];
}

public class RooflineBench
{
    public static IEnumerable<string> KindValues => Roofline.Kinds;
    public static IEnumerable<int> ThreadValues => Plan.Threads;
    [ParamsSource(nameof(KindValues))] public string Kind { get; set; } = "copy";
    [ParamsSource(nameof(ThreadValues))] public int Threads { get; set; }
    private Roofline? _r;
    [GlobalSetup] public void Setup() => _r = new Roofline(Kind, Threads, Plan.RooflineBytes);
    [GlobalCleanup] public void Cleanup() => _r?.Dispose();
    [Benchmark] public void Run() => _r!.Run();
}

public class NormKitBench
{
    public static IEnumerable<BenchCase> CaseValues => Plan.Cases;
    public static IEnumerable<int> ThreadValues => Plan.Threads;
    [ParamsSource(nameof(CaseValues))] public BenchCase Case { get; set; } = null!;
    [ParamsSource(nameof(ThreadValues))] public int Threads { get; set; }
    private NormKitOp? _op;
    [GlobalSetup]
    public void Setup()
    {
        NormKitThreading.MaxDegreeOfParallelism = Threads;
        _op = new NormKitOp(Case);
    }
    [Benchmark] public void Run() => _op!.Run();
}

public class OrtBench
{
    public static IEnumerable<BenchCase> CaseValues => Plan.Cases.Where(c => c.OrtHasIt);
    public static IEnumerable<int> ThreadValues => Plan.Threads;
    [ParamsSource(nameof(CaseValues))] public BenchCase Case { get; set; } = null!;
    [ParamsSource(nameof(ThreadValues))] public int Threads { get; set; }
    private OrtOp? _op;
    [GlobalSetup] public void Setup() => _op = new OrtOp(Case, Threads);
    [GlobalCleanup] public void Cleanup() => _op?.Dispose();
    [Benchmark] public void Run() => _op!.Run();
}
