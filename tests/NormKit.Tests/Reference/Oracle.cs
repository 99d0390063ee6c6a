namespace NormKit.Tests.Reference;

/// <summary>
/// An independent reference, in double, written from the formulas in REFERENCE.md. It
/// shares no code with the library: plain loops, textbook two-pass statistics.
/// </summary>
public static class Oracle
{
    public static (double[] Y, double[] Mean, double[] Rstd) LayerNorm(double[] x, int rows, int cols, double[]? w, double[]? b, double eps)
    {
        var y = new double[x.Length];
        var mean = new double[rows];
        var rstd = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double s = 0;
            for (int j = 0; j < cols; j++) s += x[r * cols + j];
            double mu = s / cols;
            double q = 0;
            for (int j = 0; j < cols; j++) q += (x[r * cols + j] - mu) * (x[r * cols + j] - mu);
            double rs = 1 / Math.Sqrt(q / cols + eps);
            mean[r] = mu; rstd[r] = rs;
            for (int j = 0; j < cols; j++)
                y[r * cols + j] = (x[r * cols + j] - mu) * rs * (w?[j] ?? 1) + (b?[j] ?? 0);
        }
        return (y, mean, rstd);
    }

    /// <summary>dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat)), g = dy * w; dW = sum dy * x_hat; dB = sum dy.</summary>
    public static (double[] Dx, double[] Dw, double[] Db) LayerNormBackward(double[] dy, double[] x, int rows, int cols, double[]? w, double eps)
    {
        var (_, mean, rstd) = LayerNorm(x, rows, cols, null, null, eps);
        var dx = new double[x.Length];
        var dw = new double[cols];
        var db = new double[cols];
        for (int r = 0; r < rows; r++)
        {
            double mg = 0, mgx = 0;
            for (int j = 0; j < cols; j++)
            {
                double xh = (x[r * cols + j] - mean[r]) * rstd[r];
                double g = dy[r * cols + j] * (w?[j] ?? 1);
                mg += g / cols; mgx += g * xh / cols;
                dw[j] += dy[r * cols + j] * xh;
                db[j] += dy[r * cols + j];
            }
            for (int j = 0; j < cols; j++)
            {
                double xh = (x[r * cols + j] - mean[r]) * rstd[r];
                double g = dy[r * cols + j] * (w?[j] ?? 1);
                dx[r * cols + j] = rstd[r] * (g - mg - xh * mgx);
            }
        }
        return (dx, dw, db);
    }

    /// <summary>Offset of element (n, c, s) in a (N, C, S) channels-first or (N, S, C) channels-last buffer.</summary>
    public static int At(int n, int c, int s, int C, int S, bool channelsLast) => channelsLast ? (n * S + s) * C + c : (n * C + c) * S + s;

    public static (double[] Mean, double[] BiasedVar) ChannelStats(double[] x, int N, int C, int S, bool cl)
    {
        var mean = new double[C];
        var var = new double[C];
        double cnt = (double)N * S;
        for (int c = 0; c < C; c++)
        {
            double s = 0;
            for (int n = 0; n < N; n++) for (int k = 0; k < S; k++) s += x[At(n, c, k, C, S, cl)];
            double mu = s / cnt, q = 0;
            for (int n = 0; n < N; n++) for (int k = 0; k < S; k++) { double d = x[At(n, c, k, C, S, cl)] - mu; q += d * d; }
            mean[c] = mu; var[c] = q / cnt;
        }
        return (mean, var);
    }

    /// <summary>y = (x - mean) / sqrt(var + eps) * w + b per channel, with the given statistics.</summary>
    public static double[] BatchNormApply(double[] x, int N, int C, int S, bool cl, double[] mean, double[] var, double[]? w, double[]? b, double eps)
    {
        var y = new double[x.Length];
        for (int n = 0; n < N; n++)
            for (int c = 0; c < C; c++)
                for (int k = 0; k < S; k++)
                {
                    int i = At(n, c, k, C, S, cl);
                    y[i] = (x[i] - mean[c]) / Math.Sqrt(var[c] + eps) * (w?[c] ?? 1) + (b?[c] ?? 0);
                }
        return y;
    }

    public static double[] BatchNormTrain(double[] x, int N, int C, int S, bool cl, double[]? w, double[]? b, double eps)
    {
        var (mean, var) = ChannelStats(x, N, C, S, cl);
        return BatchNormApply(x, N, C, S, cl, mean, var, w, b, eps);
    }

    /// <summary>Training backward with n = N*S: dx = (dy - sum/n - (x - mean) * dot * rstd^2 / n) * rstd * w; dW = dot * rstd; dB = sum.</summary>
    public static (double[] Dx, double[] Dw, double[] Db) BatchNormBackwardTrain(double[] dy, double[] x, int N, int C, int S, bool cl, double[]? w, double eps)
    {
        var (mean, var) = ChannelStats(x, N, C, S, cl);
        var dx = new double[x.Length];
        var dw = new double[C];
        var db = new double[C];
        double n = (double)N * S;
        for (int c = 0; c < C; c++)
        {
            double rs = 1 / Math.Sqrt(var[c] + eps), sum = 0, dot = 0;
            for (int a = 0; a < N; a++) for (int k = 0; k < S; k++)
                {
                    int i = At(a, c, k, C, S, cl);
                    sum += dy[i]; dot += (x[i] - mean[c]) * dy[i];
                }
            for (int a = 0; a < N; a++) for (int k = 0; k < S; k++)
                {
                    int i = At(a, c, k, C, S, cl);
                    dx[i] = (dy[i] - sum / n - (x[i] - mean[c]) * dot * rs * rs / n) * rs * (w?[c] ?? 1);
                }
            dw[c] = dot * rs; db[c] = sum;
        }
        return (dx, dw, db);
    }

    /// <summary>GroupNorm: segment (n, g) = channels g*C/G .. (g+1)*C/G - 1 over all S positions; per-channel affine.</summary>
    public static (double[] Y, double[] Mean, double[] Rstd) GroupNorm(double[] x, int N, int C, int S, bool cl, int G, double[]? w, double[]? b, double eps)
    {
        var y = new double[x.Length];
        var mean = new double[N * G];
        var rstd = new double[N * G];
        int cg = C / G;
        for (int n = 0; n < N; n++)
            for (int g = 0; g < G; g++)
            {
                double s = 0, q = 0, m = cg * S;
                for (int c = g * cg; c < (g + 1) * cg; c++) for (int k = 0; k < S; k++) s += x[At(n, c, k, C, S, cl)];
                double mu = s / m;
                for (int c = g * cg; c < (g + 1) * cg; c++) for (int k = 0; k < S; k++) { double d = x[At(n, c, k, C, S, cl)] - mu; q += d * d; }
                double rs = 1 / Math.Sqrt(q / m + eps);
                mean[n * G + g] = mu; rstd[n * G + g] = rs;
                for (int c = g * cg; c < (g + 1) * cg; c++)
                    for (int k = 0; k < S; k++)
                    {
                        int i = At(n, c, k, C, S, cl);
                        y[i] = (x[i] - mu) * rs * (w?[c] ?? 1) + (b?[c] ?? 0);
                    }
            }
        return (y, mean, rstd);
    }

    /// <summary>GroupNorm backward per segment: dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat)), g = dy * w[c].</summary>
    public static (double[] Dx, double[] Dw, double[] Db) GroupNormBackward(double[] dy, double[] x, int N, int C, int S, bool cl, int G, double[]? w, double eps)
    {
        var (_, mean, rstd) = GroupNorm(x, N, C, S, cl, G, null, null, eps);
        var dx = new double[x.Length];
        var dw = new double[C];
        var db = new double[C];
        int cg = C / G;
        for (int n = 0; n < N; n++)
            for (int g = 0; g < G; g++)
            {
                double mu = mean[n * G + g], rs = rstd[n * G + g], m = cg * S, mg = 0, mgx = 0;
                for (int c = g * cg; c < (g + 1) * cg; c++)
                    for (int k = 0; k < S; k++)
                    {
                        int i = At(n, c, k, C, S, cl);
                        double xh = (x[i] - mu) * rs, gg = dy[i] * (w?[c] ?? 1);
                        mg += gg / m; mgx += gg * xh / m;
                        dw[c] += dy[i] * xh; db[c] += dy[i];
                    }
                for (int c = g * cg; c < (g + 1) * cg; c++)
                    for (int k = 0; k < S; k++)
                    {
                        int i = At(n, c, k, C, S, cl);
                        double xh = (x[i] - mu) * rs;
                        dx[i] = rs * (dy[i] * (w?[c] ?? 1) - mg - xh * mgx);
                    }
            }
        return (dx, dw, db);
    }

    /// <summary>RMSNorm: y = x / sqrt(mean(x^2) + eps) * w per row.</summary>
    public static (double[] Y, double[] Rstd) RmsNorm(double[] x, int rows, int cols, double[]? w, double eps)
    {
        var y = new double[x.Length];
        var rstd = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            double q = 0;
            for (int j = 0; j < cols; j++) q += x[r * cols + j] * x[r * cols + j];
            double rs = 1 / Math.Sqrt(q / cols + eps);
            rstd[r] = rs;
            for (int j = 0; j < cols; j++) y[r * cols + j] = x[r * cols + j] * rs * (w?[j] ?? 1);
        }
        return (y, rstd);
    }

    /// <summary>RMSNorm backward per row: dx = rstd * (g - x_hat * mean(g * x_hat)), g = dy * w, x_hat = x * rstd.</summary>
    public static double[] RmsNormBackward(double[] dy, double[] x, int rows, int cols, double[]? w, double eps)
    {
        var (_, rstd) = RmsNorm(x, rows, cols, null, eps);
        var dx = new double[x.Length];
        for (int r = 0; r < rows; r++)
        {
            double m = 0;
            for (int j = 0; j < cols; j++) m += dy[r * cols + j] * (w?[j] ?? 1) * x[r * cols + j] * rstd[r] / cols;
            for (int j = 0; j < cols; j++)
                dx[r * cols + j] = rstd[r] * (dy[r * cols + j] * (w?[j] ?? 1) - x[r * cols + j] * rstd[r] * m);
        }
        return dx;
    }

    /// <summary>BatchNorm training forward over the unmasked positions only; masked outputs are 0.</summary>
    public static double[] MaskedBatchNorm(double[] x, bool[] mask, int N, int C, int S, bool cl, double[]? w, double[]? b, double eps,
        out double[] mean, out double[] biasedVar, out double count)
    {
        mean = new double[C]; biasedVar = new double[C];
        count = mask.Count(v => v);
        var y = new double[x.Length];
        for (int c = 0; c < C; c++)
        {
            double s = 0, q = 0;
            for (int n = 0; n < N; n++) for (int k = 0; k < S; k++) if (mask[n * S + k]) s += x[At(n, c, k, C, S, cl)];
            double mu = s / count;
            for (int n = 0; n < N; n++) for (int k = 0; k < S; k++) if (mask[n * S + k]) { double d = x[At(n, c, k, C, S, cl)] - mu; q += d * d; }
            mean[c] = mu; biasedVar[c] = q / count;
            for (int n = 0; n < N; n++)
                for (int k = 0; k < S; k++)
                {
                    int i = At(n, c, k, C, S, cl);
                    y[i] = mask[n * S + k] ? (x[i] - mu) / Math.Sqrt(q / count + eps) * (w?[c] ?? 1) + (b?[c] ?? 0) : 0;
                }
        }
        return y;
    }

    /// <summary>Central differences of f at x, one coordinate at a time.</summary>
    public static double[] NumericalGradient(Func<double[], double> f, double[] x, double h = 1e-6)
    {
        var g = new double[x.Length];
        var p = (double[])x.Clone();
        for (int i = 0; i < x.Length; i++)
        {
            p[i] = x[i] + h; double fp = f(p);
            p[i] = x[i] - h; double fm = f(p);
            p[i] = x[i];
            g[i] = (fp - fm) / (2 * h);
        }
        return g;
    }

    public static double Dot(double[] a, double[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }
}
