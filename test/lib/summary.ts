// The one line `npm test` ends with: "summary: N passed, N failed, N skipped", from vitest's
// JSON report and csi-sanity/run's output, plus one line per reason a run is not clean.
// It must not be foolable: whatever kept a test from running or from being judged (a file
// that did not load, a failed hook, an unhandled error, a skipped test, a csi-sanity run
// that ran fewer specs than its version has, a summary line nobody can read) counts, and
// the exit code is non-zero whenever the line shows a failure or a skip.
//
//   node dist/test/lib/summary.js [--step NAME EXIT_CODE]... --vitest REPORT.json EXIT_CODE
//        --sanity OUTPUT.txt EXIT_CODE [--sanity-guest OUTPUT.txt EXIT_CODE] [--sanity-script csi-sanity/run]
// --sanity-guest: csi-sanity/run's output from inside the real-kernel guest (test/guest/run),
// judged against the script's GUEST_RUNS=(...) instead of its default runs.
// A step is whatever else the run does before the tests (a build, the type check, the linter):
// one failure each when its exit code is not 0.
import fs from 'node:fs';
import path from 'node:path';

export interface Tally {
  passed: number;
  failed: number;
  skipped: number;
  /** Why each failure or skip was counted, for a person reading the log. */
  problems: string[];
}

const empty = (): Tally => ({ passed: 0, failed: 0, skipped: 0, problems: [] });

function fail(t: Tally, why: string): void {
  t.failed += 1;
  t.problems.push(`FAILED: ${why}`);
}

// The parts of vitest's JSON reporter (jest-compatible format) that are read here.
interface VitestAssertion {
  fullName?: string;
  title?: string;
  status?: string;
}
interface VitestFile {
  name?: string;
  status?: string;
  message?: string;
  assertionResults?: VitestAssertion[];
}
interface VitestReport {
  success?: boolean;
  numFailedTests?: number;
  numFailedTestSuites?: number;
  testResults?: VitestFile[];
}

const SKIP_STATES = new Set(['skipped', 'pending', 'todo', 'disabled']);

/**
 * Counts one vitest run from its JSON report (undefined: none was written) and its exit code.
 * Vitest 4's report shows a file that failed to load or whose beforeAll/afterAll threw only as
 * the file's status 'failed' (with no failed test in it), and does not show unhandled errors at
 * all: those runs are found by the file status and by the exit code.
 */
export function summariseVitest(reportText: string | undefined, exitCode: number): Tally {
  const t = empty();
  let report: VitestReport;
  try {
    if (reportText === undefined) throw new Error('no report file');
    report = JSON.parse(reportText) as VitestReport;
    if (!Array.isArray(report.testResults)) throw new Error('no testResults in it');
  } catch (e) {
    fail(t, `vitest: no readable JSON report (${(e as Error).message}), exit code ${exitCode}`);
    return t;
  }
  if (report.testResults.length === 0) fail(t, 'vitest: the report lists no test file');
  let failedTests = 0;
  for (const file of report.testResults) {
    const name = file.name ? path.relative(process.cwd(), file.name) : '(unnamed file)';
    const tests = file.assertionResults ?? [];
    let failedHere = 0;
    for (const a of tests) {
      const title = `${name} > ${a.fullName ?? a.title ?? '(unnamed test)'}`;
      if (a.status === 'passed') t.passed += 1;
      else if (a.status === 'failed') {
        failedHere += 1;
        failedTests += 1;
        fail(t, title);
      } else if (a.status !== undefined && SKIP_STATES.has(a.status)) {
        t.skipped += 1;
        t.problems.push(`SKIPPED (${a.status}): ${title}`);
      } else fail(t, `${title}: unknown test status ${JSON.stringify(a.status)}`);
    }
    const message = (file.message ?? '').trim();
    if (file.status === 'failed') {
      // A failed file with no failed test, or with an error of its own, failed outside any test:
      // an import/collection error, a beforeAll/afterAll that threw.
      if (failedHere === 0 || message) {
        const why = message ? message.split('\n')[0] : tests.length ? 'a beforeAll/afterAll hook failed' : 'the file did not load';
        fail(t, `${name}: suite failed outside its tests: ${why}`);
      }
    } else if (file.status !== undefined && SKIP_STATES.has(file.status) && tests.length === 0) {
      t.skipped += 1;
      t.problems.push(`SKIPPED (${file.status}): ${name}`);
    } else if (file.status !== 'passed' && !(file.status !== undefined && SKIP_STATES.has(file.status))) {
      fail(t, `${name}: unknown file status ${JSON.stringify(file.status)}`);
    }
  }
  // Cross-checks against vitest's own totals and exit code: whatever they report that the
  // walk above did not find is still a failure.
  if ((report.numFailedTests ?? 0) > failedTests) {
    fail(t, `vitest: the report counts ${report.numFailedTests} failed tests, ${failedTests} were found in it`);
  }
  if (t.failed === 0 && ((report.numFailedTestSuites ?? 0) > 0 || report.success === false)) {
    fail(t, `vitest: the report says the run failed (${report.numFailedTestSuites ?? 0} failed suites) but names no failure`);
  }
  if (t.failed === 0 && exitCode !== 0) {
    fail(t, `vitest exited ${exitCode} though its report shows no failure: an unhandled error (see vitest's output above)`);
  }
  return t;
}

/** What one csi-sanity version must do against the driver: the runs and the spec count of each. */
export interface SanityExpectation {
  version: string;
  ran: number;
  total: number;
  runs: string[]; // "loop mount", ...
  /** The runs made inside the real-kernel guest (GUEST_RUNS=(...)): "lvm-dm mount", ... */
  guestRuns: string[];
  /** Specs csi-sanity/run lists as not passing yet: it skips exactly these, each run. */
  notYetPassing: string[];
}

/**
 * The expectation as csi-sanity/run declares it (VERSION=, SPECS_RAN=, SPECS_TOTAL= and the
 * default RUNS=(...)): one place, next to the version it belongs to.
 */
export function readSanityExpectation(scriptText: string): SanityExpectation {
  const one = (re: RegExp, what: string) => {
    const m = re.exec(scriptText);
    if (!m) throw new Error(`csi-sanity/run does not declare ${what}`);
    return m[1];
  };
  const version = one(/^VERSION=(v[\d.]+)\s*$/m, 'VERSION=vX.Y.Z');
  const ran = Number(one(/^SPECS_RAN=(\d+)\s*$/m, 'SPECS_RAN=N'));
  const total = Number(one(/^SPECS_TOTAL=(\d+)\s*$/m, 'SPECS_TOTAL=N'));
  const runList = (text: string) =>
    text
      .trim()
      .split(/\s+/)
      .map((r) => r.replace(':', ' '));
  const runs = runList(one(/RUNS=\(((?:[a-z]+:(?:mount|block)\s*)+)\)/, 'its default RUNS=(backend:mode ...)'));
  const guestRuns = runList(one(/^GUEST_RUNS=\(((?:[a-z-]+:(?:mount|block)\s*)+)\)/m, 'GUEST_RUNS=(backend:mode ...)'));
  const listed = /^NOT_YET_PASSING=\(([^)]*)\)/m.exec(scriptText);
  if (!listed) throw new Error('csi-sanity/run does not declare NOT_YET_PASSING=(...) (empty when every spec passes)');
  const notYetPassing = [...listed[1].matchAll(/^\s*'([^']+)'\s*$/gm)].map((m) => m[1]);
  return { version, ran, total, runs, guestRuns, notYetPassing };
}

// csi-sanity/run ends with one line per run:
//   csi-sanity loop mount mode: Ran 102 of 103 Specs in 50.1 seconds | SUCCESS! -- 102 Passed | 0 Failed | 0 Pending | 1 Skipped (52s)
// The rest of its output (logs of failed runs) may repeat ginkgo's lines and is not counted.
const RUN_LINE = /^csi-sanity (\S+) (\S+) mode: (.*)$/gm;
// ginkgo v2's summary; Flaked and Repeated appear only when non-zero.
const COUNTS =
  /^(SUCCESS|FAIL)!(?: - [^\n]*?)? -- (\d+) Passed \| (\d+) Failed \| (?:(\d+) Flaked \| )?(?:(\d+) Repeated \| )?(\d+) Pending \| (\d+) Skipped\b/;

/** Counts csi-sanity/run's output (its stdout) and exit code against the expectation. */
export function summariseSanity(output: string, exitCode: number, expect: SanityExpectation): Tally {
  const t = empty();
  const seen = new Map<string, number>();
  for (const m of output.matchAll(RUN_LINE)) {
    const run = `${m[1]} ${m[2]}`;
    const rest = m[3];
    const label = `csi-sanity ${expect.version} ${run}`;
    seen.set(run, (seen.get(run) ?? 0) + 1);
    if (!expect.runs.includes(run)) fail(t, `${label}: not a run csi-sanity/run makes`);
    const ran = /\bRan (\d+) of (\d+) Specs\b/.exec(rest);
    if (!ran) fail(t, `${label}: no "Ran N of M Specs" line`);
    else if (Number(ran[1]) !== expect.ran - expect.notYetPassing.length || Number(ran[2]) !== expect.total) {
      fail(t, `${label}: ran ${ran[1]} of ${ran[2]} specs, ${expect.version} must run ${expect.ran - expect.notYetPassing.length} of ${expect.total}`);
    }
    const summary = rest
      .slice(rest.indexOf('|') + 1)
      .replace(/\(\d+s\)\s*$/, '') // the run's wall time, added by csi-sanity/run
      .trim();
    const c = COUNTS.exec(summary);
    if (!c) {
      fail(t, `${label}: unreadable summary ${JSON.stringify(summary.slice(0, 160))}`);
      continue;
    }
    const [, verdict, passed, failed, flaked, , pending, skipped] = c;
    t.passed += Number(passed);
    for (let i = 0; i < Number(failed); i++) fail(t, `${label}: a spec failed (see its log above)`);
    if (Number(flaked ?? 0) > 0) fail(t, `${label}: ${flaked} specs flaked`);
    if (verdict === 'FAIL' && Number(failed) === 0) fail(t, `${label}: the suite failed outside its specs: ${summary.slice(0, 160)}`);
    // The suite's own disabled specs (XIt) are pending in every run and are the difference
    // between the specs it has and the specs it must run; the listed not-yet-passing ones
    // are skipped on purpose; anything beyond them was skipped.
    const notRun = Math.max(0, Number(pending) - (expect.total - expect.ran)) + Math.max(0, Number(skipped) - expect.notYetPassing.length);
    if (notRun > 0) {
      t.skipped += notRun;
      t.problems.push(`SKIPPED: ${label}: ${pending} pending (${expect.total - expect.ran} expected), ${skipped} skipped specs`);
    }
  }
  for (const run of expect.runs) {
    const n = seen.get(run) ?? 0;
    if (n === 0) fail(t, `csi-sanity ${run}: the run is missing from the output`);
    if (n > 1) fail(t, `csi-sanity ${run}: reported ${n} times`);
  }
  if (t.failed === 0 && exitCode !== 0) fail(t, `csi-sanity/run exited ${exitCode} though every run line reads clean`);
  return t;
}

/** A step that has no tests of its own: one failure when it did not exit 0. */
export function summariseStep(name: string, exitCode: number): Tally {
  const t = empty();
  if (exitCode !== 0) fail(t, `${name} exited ${exitCode} (see its output above)`);
  return t;
}

export function combine(...tallies: Tally[]): Tally {
  const t = empty();
  for (const x of tallies) {
    t.passed += x.passed;
    t.failed += x.failed;
    t.skipped += x.skipped;
    t.problems.push(...x.problems);
  }
  return t;
}

export const summaryLine = (t: Tally) => `summary: ${t.passed} passed, ${t.failed} failed, ${t.skipped} skipped`;

/** A run is clean only with nothing failed and nothing skipped. */
export const clean = (t: Tally) => t.failed === 0 && t.skipped === 0;

/** The command: what it prints, line by line, and its exit code (0 only for a clean run). */
export function main(argv: string[]): { lines: string[]; exitCode: number } {
  const arg = (flag: string, n: number) => {
    const i = argv.indexOf(flag);
    return i < 0 ? undefined : argv.slice(i + 1, i + 1 + n);
  };
  const read = (f: string) => {
    try {
      return fs.readFileSync(f, 'utf8');
    } catch {
      return undefined;
    }
  };
  const tallies: Tally[] = [];
  argv.forEach((a, i) => {
    if (a === '--step') tallies.push(summariseStep(argv[i + 1] ?? '(unnamed step)', Number(argv[i + 2])));
  });
  const v = arg('--vitest', 2);
  if (v) tallies.push(summariseVitest(read(v[0]), Number(v[1])));
  const s = arg('--sanity', 2);
  const g = arg('--sanity-guest', 2);
  if (s || g) {
    const script = arg('--sanity-script', 1)?.[0] ?? 'csi-sanity/run';
    const expect = readSanityExpectation(fs.readFileSync(script, 'utf8'));
    if (s) tallies.push(summariseSanity(read(s[0]) ?? '', Number(s[1]), expect));
    if (g) tallies.push(summariseSanity(read(g[0]) ?? '', Number(g[1]), { ...expect, runs: expect.guestRuns }));
  }
  if (!tallies.length) throw new Error('usage: summary [--step NAME EXIT]... --vitest REPORT.json EXIT --sanity OUTPUT.txt EXIT [--sanity-guest OUTPUT.txt EXIT] [--sanity-script FILE]');
  const t = combine(...tallies);
  return { lines: [...t.problems, summaryLine(t)], exitCode: clean(t) ? 0 : 1 };
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(import.meta.filename)) {
  try {
    const { lines, exitCode } = main(process.argv.slice(2));
    for (const l of lines) console.log(l);
    process.exitCode = exitCode;
  } catch (e) {
    console.error(`summary: ${(e as Error).message}`);
    process.exitCode = 2;
  }
}
