// The summary line of `npm test` (test/lib/summary.ts) against deliberately broken runs.
// The vitest reports are real: each fixture in test/fixtures/vitest-broken is run by vitest
// in a child process here, so a vitest upgrade that changes what its JSON report says shows
// up as a failure of this file, not as a summary that silently stops counting something.
// The csi-sanity samples are csi-sanity/run's output as it prints it (one real run's lines
// plus variants in ginkgo v2's own summary formats).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  summariseVitest,
  summariseSanity,
  readSanityExpectation,
  combine,
  clean,
  summaryLine,
  main,
  type SanityExpectation,
  type Tally,
} from '../lib/summary.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const FIXTURES = path.join(ROOT, 'test', 'fixtures');
const BROKEN = path.join(FIXTURES, 'vitest-broken');
const VITEST = path.join(ROOT, 'node_modules', 'vitest', 'vitest.mjs');

interface Run {
  report: string | undefined;
  exitCode: number;
}

let tmp: string;
const runs = new Map<string, Run>();

/** vitest on one fixture file, as test/run-all runs it: JSON report to a file, exit code kept. */
async function runFixture(file: string): Promise<Run> {
  const out = path.join(tmp, `${file}.json`);
  // The child must not think it is a worker of this run.
  const env = {
    ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(VITEST|TINYPOOL)/.test(k))),
    TSCSI_FIXTURE_CACHE_DIR: path.join(tmp, 'cache'),
  };
  const r = await execa(
    process.execPath,
    [VITEST, 'run', '--config', path.join(BROKEN, 'vitest.config.ts'), '--root', BROKEN, file, '--reporter=json', `--outputFile.json=${out}`],
    { cwd: ROOT, env, extendEnv: false, reject: false, timeout: 90_000, all: true },
  );
  const report = fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : undefined;
  if (report === undefined) throw new Error(`vitest wrote no report for ${file} (exit ${r.exitCode}):\n${r.all}`);
  return { report, exitCode: r.exitCode ?? -1 };
}

const FILES = [
  'passing.fixture.ts',
  'failing.fixture.ts',
  'collection-error.fixture.ts',
  'before-all.fixture.ts',
  'after-all.fixture.ts',
  'skipped.fixture.ts',
  'unhandled-rejection.fixture.ts',
];

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tscsi-summary-test-'));
  // Two at a time: the machine has two cores and each child is a whole vitest.
  for (let i = 0; i < FILES.length; i += 2) {
    await Promise.all(FILES.slice(i, i + 2).map(async (f) => runs.set(f, await runFixture(f))));
  }
}, 180_000);

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

const vitestOf = (file: string): Tally => {
  const r = runs.get(file);
  if (!r) throw new Error(`no run of ${file}`);
  return summariseVitest(r.report, r.exitCode);
};

describe('vitest reports', () => {
  it('a clean run is clean: every test passed, nothing else counted', () => {
    const t = vitestOf('passing.fixture.ts');
    expect(runs.get('passing.fixture.ts')?.exitCode).toBe(0);
    expect(t).toMatchObject({ passed: 2, failed: 0, skipped: 0 });
    expect(clean(t)).toBe(true);
  });

  it('a failed assertion is one failure', () => {
    const t = vitestOf('failing.fixture.ts');
    expect(t).toMatchObject({ passed: 1, failed: 1, skipped: 0 });
    expect(t.problems.join('\n')).toMatch(/failing\.fixture\.ts > fails/);
  });

  it('a file that cannot be imported counts as failed (the report has no test in it)', () => {
    const t = vitestOf('collection-error.fixture.ts');
    expect(t.failed).toBeGreaterThanOrEqual(1);
    expect(t.problems.join('\n')).toMatch(/collection-error\.fixture\.ts: suite failed outside its tests: .*no-such-module/);
    expect(clean(t)).toBe(false);
  });

  it('a beforeAll that throws counts as failed, and the tests it kept from running as skipped', () => {
    const t = vitestOf('before-all.fixture.ts');
    expect(t.failed).toBeGreaterThanOrEqual(1);
    expect(t.skipped).toBe(2);
    expect(t.problems.join('\n')).toMatch(/before-all\.fixture\.ts: suite failed outside its tests/);
  });

  it('an afterAll that throws after every test passed counts as failed', () => {
    const t = vitestOf('after-all.fixture.ts');
    expect(t.passed).toBe(1);
    expect(t.failed).toBeGreaterThanOrEqual(1);
    expect(t.problems.join('\n')).toMatch(/clean-up failed on purpose/);
  });

  it('any skipped, skipIf-skipped or todo test makes the run unclean, though vitest exits 0', () => {
    const r = runs.get('skipped.fixture.ts');
    expect(r?.exitCode).toBe(0);
    const t = vitestOf('skipped.fixture.ts');
    expect(t).toMatchObject({ passed: 1, failed: 0, skipped: 3 });
    expect(t.problems.filter((p) => p.startsWith('SKIPPED'))).toHaveLength(3);
    expect(clean(t)).toBe(false);
  });

  it('an unhandled rejection counts as failed: the report shows only passes, the exit code does not', () => {
    const r = runs.get('unhandled-rejection.fixture.ts');
    // What makes this case hard: vitest 4's JSON report does not mention the error at all.
    expect(JSON.parse(r?.report ?? '{}')).toMatchObject({ success: true, numFailedTests: 0 });
    expect(r?.exitCode).not.toBe(0);
    const t = vitestOf('unhandled-rejection.fixture.ts');
    expect(t.failed).toBe(1);
    expect(t.problems.join('\n')).toMatch(/vitest exited \d+ though its report shows no failure/);
  });

  it('a missing or unreadable report counts as failed', () => {
    expect(summariseVitest(undefined, 1).failed).toBe(1);
    expect(summariseVitest('{"numPassedTests": 3', 0).failed).toBe(1);
    expect(summariseVitest('{"numPassedTests": 3}', 0).failed).toBe(1);
  });
});

describe('csi-sanity output', () => {
  const declared = readSanityExpectation(fs.readFileSync(path.join(ROOT, 'csi-sanity', 'run'), 'utf8'));
  // The fixtures are runs with every spec passing (no not-yet-passing list).
  const expectation: SanityExpectation = { ...declared, notYetPassing: [] };
  const sample = (name: string) => fs.readFileSync(path.join(FIXTURES, 'csi-sanity', name), 'utf8');
  const sanity = (name: string, exitCode = 0, exp: SanityExpectation = expectation) => summariseSanity(sample(name), exitCode, exp);

  it('reads the expectation from csi-sanity/run, next to the version it belongs to', () => {
    expect(declared).toEqual({
      version: 'v5.6.0',
      ran: 102,
      total: 103,
      runs: ['loop mount', 'loop block', 'lvm mount', 'lvm block', 'rbd mount', 'rbd block'],
      guestRuns: ['lvm-dm mount'],
      notYetPassing: expect.any(Array),
    });
    expect(() => readSanityExpectation('VERSION=v5.6.0\n')).toThrow(/SPECS_RAN/);
    expect(() => readSanityExpectation('VERSION=v5.6.0\nSPECS_RAN=1\nSPECS_TOTAL=2\nRUNS=(loop:mount)\nGUEST_RUNS=(lvm-dm:mount)\n')).toThrow(/NOT_YET_PASSING/);
    expect(() => readSanityExpectation("VERSION=v5.6.0\nSPECS_RAN=1\nSPECS_TOTAL=2\nRUNS=(loop:mount)\nNOT_YET_PASSING=(\n)\n")).toThrow(/GUEST_RUNS/);
    const listed = readSanityExpectation(
      "VERSION=v5.6.0\nSPECS_RAN=1\nSPECS_TOTAL=2\nRUNS=(loop:mount)\nGUEST_RUNS=(lvm-dm:block)\nNOT_YET_PASSING=(\n  'a spec'\n  'another spec'\n)\n",
    );
    expect(listed.notYetPassing).toEqual(['a spec', 'another spec']);
    expect(listed.guestRuns).toEqual(['lvm-dm block']);
  });

  it('specs listed as not yet passing are skipped on purpose; one skip more counts, and so does running them', () => {
    const run = (ran: number, skipped: number) =>
      ['loop mount', 'loop block', 'lvm mount', 'lvm block', 'rbd mount', 'rbd block']
        .map((r) => `csi-sanity ${r} mode: Ran ${ran} of 103 Specs in 9.1 seconds | SUCCESS! -- ${ran} Passed | 0 Failed | 1 Pending | ${skipped} Skipped (10s)`)
        .join('\n');
    const listed: SanityExpectation = { ...declared, notYetPassing: ['one spec'] };
    expect(summariseSanity(run(101, 1), 0, listed)).toMatchObject({ passed: 6 * 101, failed: 0, skipped: 0 });
    expect(summariseSanity(run(100, 2), 0, listed)).toMatchObject({ failed: 6, skipped: 6 });
    expect(summariseSanity(run(102, 0), 0, listed).failed).toBe(6);
  });

  it('six clean runs are clean', () => {
    const t = sanity('passed.txt');
    expect(t).toMatchObject({ passed: 6 * 102, failed: 0, skipped: 0 });
  });

  it('failed specs count, once each, not again from the log lines printed above', () => {
    const t = sanity('failed.txt', 1);
    expect(t.failed).toBe(2);
    expect(t.passed).toBe(5 * 102 + 100);
  });

  it('a FAIL! whose counts cannot be parsed (BeforeSuite failed) or no summary at all counts as failed', () => {
    const t = sanity('fail-unparsable.txt', 1);
    const problems = t.problems.join('\n');
    expect(problems).toMatch(/lvm block: unreadable summary "FAIL! -- A BeforeSuite/);
    expect(problems).toMatch(/rbd mount: unreadable summary ""/);
    // Both also ran fewer specs than the version has.
    expect(t.failed).toBe(4);
  });

  it('a FAIL! with a reason and no failed spec (interrupted) counts as failed, and its skipped specs as skipped', () => {
    const t = sanity('fail-interrupted.txt', 1);
    const problems = t.problems.join('\n');
    expect(problems).toMatch(/rbd mount: the suite failed outside its specs: FAIL! - Interrupted by Timeout/);
    expect(problems).toMatch(/rbd mount: ran 40 of 103 specs/);
    expect(t.failed).toBe(2);
    expect(t.skipped).toBe(62);
  });

  it('a run of another spec list (Ran N of M not what the version must run) counts as failed, though every spec passed', () => {
    const t = sanity('wrong-ran-count.txt');
    expect(t.failed).toBe(1);
    expect(t.problems.join('\n')).toMatch(/loop block: ran 104 of 105 specs, v5\.6\.0 must run 102 of 103/);
  });

  it('flaked specs count as failed', () => {
    const t = sanity('flaked.txt');
    expect(t.failed).toBe(1);
    expect(t.problems.join('\n')).toMatch(/lvm mount: 1 specs flaked/);
  });

  it('a missing run counts as failed', () => {
    const t = sanity('missing-run.txt', 1);
    expect(t.failed).toBe(1);
    expect(t.problems.join('\n')).toMatch(/rbd block: the run is missing/);
  });

  it('a non-zero exit of csi-sanity/run counts even when every line reads clean', () => {
    const t = sanity('passed.txt', 1);
    expect(t.failed).toBe(1);
  });
});

describe('the summary line and exit status', () => {
  it('adds both parts; any failure or skip makes the run unclean', () => {
    const ok: Tally = { passed: 3, failed: 0, skipped: 0, problems: [] };
    const skip: Tally = { passed: 1, failed: 0, skipped: 1, problems: ['SKIPPED: x'] };
    expect(summaryLine(combine(ok, skip))).toBe('summary: 4 passed, 0 failed, 1 skipped');
    expect(clean(ok)).toBe(true);
    expect(clean(combine(ok, skip))).toBe(false);
  });

  it('the command exits non-zero on a broken run and prints why, and 0 on a clean one', () => {
    const bad = runs.get('collection-error.fixture.ts');
    const good = runs.get('passing.fixture.ts');
    const files = { bad: path.join(tmp, 'bad.json'), good: path.join(tmp, 'good.json'), sanity: path.join(FIXTURES, 'csi-sanity', 'passed.txt') };
    fs.writeFileSync(files.bad, bad?.report ?? '');
    fs.writeFileSync(files.good, good?.report ?? '');
    const cli = (report: string, exitCode: number) => main(['--vitest', report, String(exitCode), '--sanity', files.sanity, '0', '--sanity-script', path.join(FIXTURES, 'csi-sanity', 'run-declarations.sh')]);
    const b = cli(files.bad, bad?.exitCode ?? -1);
    expect(b.exitCode).toBe(1);
    expect(b.lines.join('\n')).toMatch(/FAILED: .*collection-error/);
    expect(b.lines.at(-1)).toBe(`summary: ${6 * 102} passed, 1 failed, 0 skipped`);
    const g = cli(files.good, 0);
    expect(g.lines).toEqual([`summary: ${6 * 102 + 2} passed, 0 failed, 0 skipped`]);
    expect(g.exitCode).toBe(0);
    // No report file at all (vitest crashed before writing it).
    expect(cli(path.join(tmp, 'absent.json'), 1).exitCode).toBe(1);
  });

  it('the guest\'s csi-sanity output is judged against GUEST_RUNS: each run there once, none missing', () => {
    const good = runs.get('passing.fixture.ts');
    const report = path.join(tmp, 'good-for-guest.json');
    fs.writeFileSync(report, good?.report ?? '');
    const line = (run: string) => `csi-sanity ${run} mode: Ran 102 of 103 Specs in 300.1 seconds | SUCCESS! -- 102 Passed | 0 Failed | 1 Pending | 0 Skipped (301s)`;
    const guestOut = (text: string) => {
      const f = path.join(tmp, `guest-${text.length}.txt`);
      fs.writeFileSync(f, text);
      return f;
    };
    const cli = (guestFile: string, exitCode: number) =>
      main(['--vitest', report, '0', '--sanity', path.join(FIXTURES, 'csi-sanity', 'passed.txt'), '0', '--sanity-guest', guestFile, String(exitCode), '--sanity-script', path.join(FIXTURES, 'csi-sanity', 'run-declarations.sh')]);
    const ok = cli(guestOut(`${line('lvm-thin mount')}\n`), 0);
    expect(ok.lines).toEqual([`summary: ${7 * 102 + 2} passed, 0 failed, 0 skipped`]);
    expect(ok.exitCode).toBe(0);
    // The guest did not boot: test/guest/run exits 125 and no run line came back.
    const none = cli(guestOut('test/guest/run: the guest ended (qemu exit 0, 3s) without the command\'s exit code\n'), 125);
    expect(none.lines.filter((l) => /FAILED: csi-sanity lvm-thin mount: the run is missing/.test(l))).toHaveLength(1);
    expect(none.exitCode).toBe(1);
    // A host run in the guest's output is not one of its runs.
    expect(cli(guestOut(`${line('lvm-thin mount')}\n${line('lvm mount')}\n`), 0).lines.join('\n')).toMatch(/lvm mount: not a run csi-sanity\/run makes/);
  });

  it('a step before the tests (build, type check, lint) that failed counts as failed', () => {
    const good = runs.get('passing.fixture.ts');
    const report = path.join(tmp, 'good-for-steps.json');
    fs.writeFileSync(report, good?.report ?? '');
    const sanity = path.join(FIXTURES, 'csi-sanity', 'passed.txt');
    const script = path.join(FIXTURES, 'csi-sanity', 'run-declarations.sh');
    const r = main(['--step', 'kubectl build', '0', '--step', 'type check', '2', '--vitest', report, '0', '--sanity', sanity, '0', '--sanity-script', script]);
    expect(r.lines).toEqual(['FAILED: type check exited 2 (see its output above)', `summary: ${6 * 102 + 2} passed, 1 failed, 0 skipped`]);
    expect(r.exitCode).toBe(1);
  });
});
