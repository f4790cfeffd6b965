// deploy/monitoring/ checked with the real tool: promtool (cmd/promtool of the Go module
// github.com/prometheus/prometheus, built by name from the Go module proxy and cached:
// test/cluster/build promtool) checks the alert rules, runs their tests
// (tests/tscsi-alerts.test.yaml) and parses every dashboard query with Prometheus' own parser.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { dashboardQueries, asRuleFileExpr } from '../lib/promql.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const MONITORING = path.join(ROOT, 'deploy', 'monitoring');
const RULES = path.join(MONITORING, 'tscsi-alerts.yaml');
const RULE_TESTS = path.join(MONITORING, 'tests', 'tscsi-alerts.test.yaml');
const DASHBOARD = path.join(MONITORING, 'tscsi-dashboard.json');

let promtool: string;
let dir: string | undefined;

beforeAll(async () => {
  // Cached after the first build (npm test's prebuild warms it); a cold build takes many minutes.
  await execa('bash', [path.join(ROOT, 'test', 'cluster', 'build'), 'promtool'], { stdio: 'inherit' });
  promtool = path.join((await execa('bash', ['-c', `. ${path.join(ROOT, 'test/cluster/lib/versions.sh')} && echo "$PROMTOOL_BIN"`])).stdout.trim(), 'promtool');
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tscsi-promtool-'));
}, 3_600_000);

afterAll(async () => {
  if (dir) await fs.rm(dir, { recursive: true, force: true });
});

describe('deploy/monitoring with promtool', () => {
  it('the alert rules pass promtool check rules', async () => {
    const r = await execa(promtool, ['check', 'rules', RULES], { reject: false });
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/SUCCESS: 8 rules found/);
  });

  it('the alerts fire (and stay quiet) as their promtool tests say', async () => {
    const r = await execa(promtool, ['test', 'rules', RULE_TESTS], { reject: false });
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/SUCCESS/);
  });

  it('every dashboard query parses as PromQL', async () => {
    const queries = dashboardQueries(JSON.parse(await fs.readFile(DASHBOARD, 'utf8'))).filter((q) => !q.labelValuesOf);
    expect(queries.length).toBeGreaterThan(15);
    // Each query as a recording rule: promtool parses it with Prometheus' own PromQL parser.
    const file = path.join(dir!, 'dashboard-queries.yaml');
    await fs.writeFile(file, JSON.stringify({ groups: [{ name: 'dashboard', rules: queries.map((q, i) => ({ record: `tscsi:dashboard:q${i}`, expr: asRuleFileExpr(q.expr) })) }] }));
    const r = await execa(promtool, ['check', 'rules', file], { reject: false });
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`SUCCESS: ${queries.length} rules found`);
  });
});
