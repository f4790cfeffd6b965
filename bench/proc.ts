// A process's memory and CPU from /proc: RSS now, peak RSS (sampled, and the kernel's
// VmHWM, which can be reset per phase), and CPU seconds (utime+stime, and its waited-for
// children's cutime+cstime: the host tools it ran).
import fs from 'node:fs';

/** Kernel clock ticks per second for /proc/<pid>/stat times (USER_HZ: 100 on Linux x86/arm). */
export const CLK_TCK = 100;

export interface ProcStatus {
  rssBytes: number;
  hwmBytes: number;
  /** Anonymous memory (heaps, stacks): the process's own. */
  rssAnonBytes: number;
  /** File-backed pages (the node binary, shared libraries), shared with other processes. */
  rssFileBytes: number;
}

export function readStatus(pid: number): ProcStatus | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const kb = (key: string) => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
    return m ? Number(m[1]) * 1024 : NaN;
  };
  return { rssBytes: kb('VmRSS'), hwmBytes: kb('VmHWM'), rssAnonBytes: kb('RssAnon'), rssFileBytes: kb('RssFile') };
}

export interface CpuTimes {
  /** utime+stime of the process itself, seconds. */
  self: number;
  /** cutime+cstime: children it has waited for (the host tools it ran), seconds. */
  children: number;
}

/** Parses the text of /proc/<pid>/stat (the command name may hold spaces and parentheses). */
export function parseStat(text: string): CpuTimes {
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime is field 14, stime 15, cutime 16, cstime 17.
  const f = (n: number) => Number(rest[n - 3]);
  return { self: (f(14) + f(15)) / CLK_TCK, children: (f(16) + f(17)) / CLK_TCK };
}

export function readCpu(pid: number): CpuTimes | undefined {
  try {
    return parseStat(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}

/** Resets the kernel's peak-RSS mark (VmHWM) to the current RSS; false where not allowed. */
export function resetPeak(pid: number): boolean {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

export interface PhaseUsage {
  peakRssBytes: number;
  cpuSelfSeconds: number;
  cpuChildrenSeconds: number;
}

/**
 * Watches one process during a phase: samples RSS every `intervalMs` and takes the larger
 * of the sampled peak and the kernel's VmHWM (reset at start), and the CPU spent.
 */
export class PhaseMonitor {
  private timer?: NodeJS.Timeout;
  private peak = 0;
  private cpu0?: CpuTimes;

  constructor(
    readonly pid: number,
    readonly intervalMs = 20,
  ) {}

  start(): void {
    resetPeak(this.pid);
    this.cpu0 = readCpu(this.pid);
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
  }

  private sample(): void {
    const s = readStatus(this.pid);
    if (s && s.rssBytes > this.peak) this.peak = s.rssBytes;
  }

  stop(): PhaseUsage {
    if (this.timer) clearInterval(this.timer);
    this.sample();
    const s = readStatus(this.pid);
    const cpu1 = readCpu(this.pid);
    const hwm = s && Number.isFinite(s.hwmBytes) ? s.hwmBytes : 0;
    return {
      peakRssBytes: Math.max(this.peak, hwm),
      cpuSelfSeconds: cpu1 && this.cpu0 ? cpu1.self - this.cpu0.self : NaN,
      cpuChildrenSeconds: cpu1 && this.cpu0 ? cpu1.children - this.cpu0.children : NaN,
    };
  }
}
