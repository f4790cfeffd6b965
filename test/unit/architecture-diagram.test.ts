// README.md's architecture picture (docs/architecture.svg) is generated from
// docs/architecture.dot by Graphviz (`npm run diagram`; .ci/setup installs graphviz). Here it is
// generated again and compared by what it shows (test/lib/svg-essence.ts: every cluster, node
// and edge with its texts and colours; not the layout, which moves between Graphviz versions),
// so the source and the picture never drift apart, and the source is checked to name every
// sidecar the repository has.
import { describe, it, expect } from 'vitest';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { svgEssence } from '../lib/svg-essence.js';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const SOURCE = path.join(ROOT, 'docs', 'architecture.dot');
const SVG = path.join(ROOT, 'docs', 'architecture.svg');

describe('the architecture diagram', () => {
  const dot = (source: string) => execa('dot', ['-Tsvg'], { input: source }).then((r) => r.stdout);

  it('docs/architecture.svg shows what dot makes of docs/architecture.dot (else: npm run diagram)', async () => {
    const made = svgEssence(await dot(await fs.readFile(SOURCE, 'utf8')));
    expect(made.length).toBeGreaterThan(20);
    expect(svgEssence(await fs.readFile(SVG, 'utf8')), 'docs/architecture.svg is out of date: run npm run diagram and commit it').toEqual(made);
  });

  it('another Graphviz\'s layout of the same source compares equal; the byte-exact comparison it replaces did not', async () => {
    const svg = await fs.readFile(SVG, 'utf8');
    // As a newer Graphviz writes it: other coordinates and sizes, its own version comment,
    // `-` and `'` unescaped, `none` for an invisible stroke.
    const geometry = /\b(x|y|cx|cy|rx|ry|points|d|transform|viewBox|width|height)="([^"]*)"/g;
    const other = svg
      .replace(geometry, (_m, a: string, v: string) => `${a}="${v.replace(/-?\d+(?:\.\d+)?/g, (n) => String(Math.round(Number(n) * 1.07 * 100) / 100))}"`)
      .replace(/graphviz version [^\n]*/, 'graphviz version 12.2.1 (20241206.2353)')
      .replace(/&#45;/g, '-')
      .replace(/&#39;/g, "'")
      .replace(/stroke="transparent"/g, 'stroke="none"');
    expect(other).not.toBe(svg);
    expect(svgEssence(other)).toEqual(svgEssence(svg));
  });

  it('a changed label, colour or line style, an edge or a node added or removed in the .dot shows as a difference', async () => {
    const source = await fs.readFile(SOURCE, 'utf8');
    const committed = svgEssence(await fs.readFile(SVG, 'utf8'));
    const edits: [string, string, string][] = [
      ['label', 'label="registrar"', 'label="node registrar"'],
      ['colour', 'fillcolor="#fff4d6"', 'fillcolor="#ffe4d6"'],
      ['line style', 'prom -> ndriver [label=":9810", style=dashed]', 'prom -> ndriver [label=":9810"]'],
      ['edge removed', 'rbd -> ceph [label="cephx"];', ''],
      ['node and edge added', 'ndriver -> loop;', 'ndriver -> loop;\n  ndriver -> zfs;'],
    ];
    for (const [what, from, to] of edits) {
      expect(source, what).toContain(from);
      expect(svgEssence(await dot(source.replace(from, to))), what).not.toEqual(committed);
    }
  });

  it('names every sidecar and backend, and README.md shows it', async () => {
    const dot = await fs.readFile(SOURCE, 'utf8');
    const sidecars = (await fs.readdir(path.join(ROOT, 'sidecars'), { withFileTypes: true })).filter((e) => e.isDirectory() && e.name !== 'common').map((e) => e.name);
    expect(sidecars.length).toBeGreaterThan(5);
    expect(sidecars.filter((s) => !dot.includes(s))).toEqual([]);
    for (const b of ['loop', 'LVM', 'Ceph RBD', 'csi.sock', 'snapshot-controller', 'kube-apiserver', 'kubelet']) expect(dot).toContain(b);
    expect(await fs.readFile(path.join(ROOT, 'README.md'), 'utf8')).toContain('](docs/architecture.svg)');
  });
});
