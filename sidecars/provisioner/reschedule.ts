// After CreateVolume answers RESOURCE_EXHAUSTED for a claim the scheduler placed
// (WaitForFirstConsumer), the selected node cannot hold it: as external-provisioner does,
// the volume.kubernetes.io/selected-node annotation goes, so the scheduler chooses a node
// again (with the capacity objects refreshed, another one if this node's is too small). An
// Immediate claim a node took (immediate.ts) goes back the same way, to the other nodes.
import { codeName, rpcErrorText } from '../common/csi-client.js';
import { ANN_SELECTED_NODE } from '../common/annotations.js';
import { k8s, mergePatch, httpStatus } from '../common/kube.js';
import type { Recorder } from '../common/events.js';

/** Whether a failed CreateVolume sends the claim back to the scheduler. */
export const mayReschedule = (err: unknown, selectedNode: string | undefined): selectedNode is string => !!selectedNode && codeName(err) === 'RESOURCE_EXHAUSTED';

/**
 * Removes the selected-node annotation if it still names `node`, and with it our
 * provisioning finalizer: RESOURCE_EXHAUSTED is CreateVolume's final answer (a retry of a
 * call still running gets ABORTED, a driver refusing for load UNAVAILABLE), so no volume exists for the claim; kept, the
 * finalizer would hold a deleted claim that no node's provisioner looks at any more. The
 * patch carries the claim's resourceVersion: a claim changed meanwhile is left alone (the
 * next sync sees it). The Event says why the claim went back to the scheduler.
 */
export async function sendBackToScheduler(
  core: k8s.CoreV1Api,
  recorder: Recorder,
  pvc: k8s.V1PersistentVolumeClaim,
  node: string,
  finalizer: string,
  className: string | undefined,
  err: unknown,
  /** An Immediate claim a node took (immediate.ts): no scheduler chooses again, the nodes' provisioners do. */
  immediate = false,
): Promise<void> {
  const [namespace, name] = [pvc.metadata!.namespace!, pvc.metadata!.name!];
  const current = await core.readNamespacedPersistentVolumeClaim({ namespace, name }).catch((e) => {
    if (httpStatus(e) === 404) return undefined;
    throw e;
  });
  if (!current || current.metadata?.uid !== pvc.metadata?.uid || current.metadata?.annotations?.[ANN_SELECTED_NODE] !== node) return;
  const finalizers = current.metadata?.finalizers ?? [];
  await core.patchNamespacedPersistentVolumeClaim(
    {
      namespace,
      name,
      body: {
        metadata: {
          resourceVersion: current.metadata?.resourceVersion,
          annotations: { [ANN_SELECTED_NODE]: null },
          ...(finalizers.includes(finalizer) ? { finalizers: finalizers.filter((f) => f !== finalizer) } : {}),
        },
      },
    },
    mergePatch,
  );
  await recorder.event(
    current,
    'Warning',
    'ProvisioningFailed',
    `failed to provision volume with StorageClass "${className}" on node ${node}: ${rpcErrorText(err)}; removed annotation ${ANN_SELECTED_NODE} so that ${
      immediate ? `another node's provisioner can take the claim (Immediate binding; node ${node} leaves it to the others for a minute)` : 'the scheduler chooses a node again'
    }`,
  );
}
