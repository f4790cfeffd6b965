// Immediate binding on a node-local backend: whether a node's provisioner may take a claim
// (inside the class's allowedTopologies, enough capacity): pure decisions.
import { describe, it, expect } from 'vitest';
import { topologyProblem, capacityProblem } from '../../sidecars/provisioner/immediate.js';

const K = 'topology.tscsi.dev/node';
const sc = (allowedTopologies?: Array<{ matchLabelExpressions: Array<{ key: string; values: string[] }> }>) => ({ metadata: { name: 'sc' }, provisioner: 'csi.tscsi.dev', allowedTopologies });

describe('a node takes an Immediate claim', () => {
  it('anywhere when the class has no allowedTopologies', () => {
    expect(topologyProblem(sc(), 'n1', { [K]: 'n1' })).toBeUndefined();
    expect(topologyProblem(sc([]), 'n1', {})).toBeUndefined();
  });

  it('inside allowedTopologies: terms ORed, the expressions of a term ANDed', () => {
    const two = sc([{ matchLabelExpressions: [{ key: K, values: ['n1', 'n2'] }, { key: 'zone', values: ['a'] }] }, { matchLabelExpressions: [{ key: K, values: ['n3'] }] }]);
    expect(topologyProblem(two, 'n1', { [K]: 'n1', zone: 'a' })).toBeUndefined();
    expect(topologyProblem(two, 'n3', { [K]: 'n3' })).toBeUndefined();
    expect(topologyProblem(two, 'n2', { [K]: 'n2', zone: 'b' })).toBe(`node n2 is outside the StorageClass's allowedTopologies (${K} in [n1, n2] and zone in [a] or ${K} in [n3])`);
    // a label the node lacks is not a match
    expect(topologyProblem(two, 'n1', { [K]: 'n1' })).toMatch(/^node n1 is outside/);
  });

  it('with room for the claim: free bytes and the largest volume both at least the request', () => {
    expect(capacityProblem('n1', 100n, { available: 100n })).toBeUndefined();
    expect(capacityProblem('n1', 100n, { available: 200n, maximum: 100n })).toBeUndefined();
    expect(capacityProblem('n1', 101n, { available: 100n })).toBe('node n1 has 100 bytes free for this StorageClass, the claim asks for 101');
    expect(capacityProblem('n1', 150n, { available: 200n, maximum: 100n })).toBe('node n1 holds volumes of at most 100 bytes of this StorageClass, the claim asks for 150');
  });
});
