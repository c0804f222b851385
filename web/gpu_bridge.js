// Asks the browser for the GPU features wgpu's WebGPU backend cannot name, and records what
// each device got for the engine (src/gpu/web.rs reads `globalThis.icloraGpuBridge`).
//
// wgpu 30.0.2 builds the device request from its FEATURES_MAPPING table
// (wgpu/src/backend/webgpu.rs at tag v30.0.2), which has no entry for `subgroups` or
// `chromium-experimental-subgroup-matrix`, so a wgpu device in the browser never has them. This
// module wraps GPUAdapter.prototype.requestDevice (the method that table's request goes through)
// and adds them when the adapter lists them. Why not a [patch.crates-io] copy of wgpu with the
// entry added: that vendors a 30k-line crate for one table row, wgpu's `Features` has no flag for
// subgroup matrices at all, and wgpu's web backend passes WGSL to the browser unchanged, so the
// engine only needs the features enabled and the facts below, not wgpu's knowledge of them.
//
// Facts are keyed by the device label the engine passes (unique per `Gpu::new`), so two devices
// opened in the same page (the self-test opens two) never read each other's facts.

const WANTED = ['subgroups', 'chromium-experimental-subgroup-matrix'];

const bridge = (globalThis.icloraGpuBridge ??= { devices: new Map(), installed: false });

function matrixConfigs(info) {
  // GPUAdapterInfo.subgroupMatrixConfigs (Chrome, with the feature): componentType,
  // resultComponentType, M, N, K. Copied into plain objects.
  return [...(info?.subgroupMatrixConfigs ?? [])].map((c) => ({
    component: String(c.componentType),
    result: String(c.resultComponentType),
    m: Number(c.M),
    n: Number(c.N),
    k: Number(c.K),
  }));
}

if (!bridge.installed && globalThis.GPUAdapter?.prototype?.requestDevice) {
  bridge.installed = true;
  const original = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = async function requestDevice(descriptor = {}) {
    const extra = WANTED.filter((f) => this.features.has(f));
    const required = [...new Set([...(descriptor.requiredFeatures ?? []), ...extra])];
    const device = await original.call(this, { ...descriptor, requiredFeatures: required });
    if (typeof descriptor.label === 'string') {
      bridge.devices.set(descriptor.label, {
        features: [...device.features],
        // The builtins subgroup_id and num_subgroups (the engine's subgroup reductions use them).
        subgroupId: navigator.gpu?.wgslLanguageFeatures?.has('subgroup_id') ?? false,
        subgroupMinSize: Number(this.info?.subgroupMinSize ?? 0),
        subgroupMaxSize: Number(this.info?.subgroupMaxSize ?? 0),
        matrixConfigs: device.features.has('chromium-experimental-subgroup-matrix') ? matrixConfigs(this.info) : [],
      });
    }
    return device;
  };
}
