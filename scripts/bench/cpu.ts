/**
 * Where the cores went, from Linux's /proc: CPU seconds of the bench, its reaped children
 * (the tool), the emulator and the bench's Postgres server, and a process's peak RSS.
 *
 * @module
 */
import { readdir, readFile } from "node:fs/promises";

export const round = (value: number, digits = 0): number => Math.round(value * 10 ** digits) / 10 ** digits;

export interface CpuSplit {
  consumer: number;
  emulator: number;
  postgres: number;
}

/** Linux's USER_HZ: /proc counts CPU time in these ticks. */
const CLOCK_TICKS_PER_SECOND = 100;

/** CPU seconds a process has used itself, those of its children it has waited for, and its parent. */
async function readCpuSeconds(
  pid: number | "self",
): Promise<{ own: number; reaped: number; parent: number } | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    // The fields after the command name, which is in parentheses and may hold spaces: the
    // parent is field 4 (index 1 here); utime, stime, cutime and cstime are fields 14 to 17.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ").map(Number);
    const [utime = 0, stime = 0, cutime = 0, cstime = 0] = fields.slice(11, 15);
    return {
      own: (utime + stime) / CLOCK_TICKS_PER_SECOND,
      reaped: (cutime + cstime) / CLOCK_TICKS_PER_SECOND,
      parent: fields[1] ?? 0,
    };
  } catch {
    return undefined; // gone, or no /proc on this system
  }
}

const isPostgres = async (pid: number) =>
  (await readFile(`/proc/${pid}/comm`, "utf8").catch(() => "")).trim() === "postgres";

/**
 * The server process a Postgres backend belongs to (its parent), if it runs on this machine:
 * a server elsewhere may report a pid that is some other process here.
 */
export async function postmasterOf(backendPid: number): Promise<number | undefined> {
  const backend = await readCpuSeconds(backendPid);
  if (!backend || !(await isPostgres(backendPid)) || !(await isPostgres(backend.parent))) return undefined;
  return backend.parent;
}

/**
 * The CPU seconds of the bench's Postgres server: its postmaster and every process it
 * started. A backend that exits is reaped by the postmaster, so counting the postmaster's
 * reaped children keeps a closed connection's time in the sum. Another server on the
 * machine (a test suite's, starting and stopping beside the bench) is not counted; without
 * a postmaster (a server elsewhere) every local `postgres` process is.
 */
async function postgresCpuSeconds(postmaster: number | undefined): Promise<number> {
  let total = 0;
  for (const entry of await readdir("/proc").catch(() => [])) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    const cpu = await isPostgres(pid) ? await readCpuSeconds(pid) : undefined;
    if (!cpu || (postmaster !== undefined && pid !== postmaster && cpu.parent !== postmaster)) continue;
    total += cpu.own + (pid === postmaster || postmaster === undefined ? cpu.reaped : 0);
  }
  return total;
}

/** CPU used so far by this process, its finished children, the emulator and Postgres. */
export interface CpuMark {
  own: number;
  reapedChildren: number;
  emulator: number;
  postgres: number;
}

export async function markCpu(emulatorPid: number, postmaster: number | undefined): Promise<CpuMark | undefined> {
  const [self, emulator] = await Promise.all([readCpuSeconds("self"), readCpuSeconds(emulatorPid)]);
  if (!self || !emulator) return undefined;
  return {
    own: self.own,
    reapedChildren: self.reaped,
    emulator: emulator.own,
    postgres: await postgresCpuSeconds(postmaster),
  };
}

/**
 * Where the cores went between two marks. The consumer is this process for the ceiling
 * and the baseline, which run in it, and the reaped child for the tool.
 */
export function cpuBetween(
  start: CpuMark | undefined,
  end: CpuMark | undefined,
  consumer: "own" | "child",
): CpuSplit | undefined {
  if (!start || !end) return undefined;
  return {
    consumer: round(consumer === "own" ? end.own - start.own : end.reapedChildren - start.reapedChildren, 2),
    emulator: round(end.emulator - start.emulator, 2),
    postgres: round(end.postgres - start.postgres, 2),
  };
}

/** Peak resident memory of a live process in MB, from the kernel's high-water mark. */
export async function readPeakRssMb(pid: number): Promise<number | undefined> {
  try {
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    const kb = /^VmHWM:\s+(\d+) kB/m.exec(status)?.[1];
    return kb === undefined ? undefined : Number(kb) / 1024;
  } catch {
    return undefined; // already gone, or no /proc on this system
  }
}
