//! The sampler side of a FLUX run on the host: torch-compatible seeded noise
//! (`seed`) and the flow-matching sigma schedule with the Euler step
//! (`schedule`), both matching diffusers' FluxPipeline
//! (src/diffusers/pipelines/flux/pipeline_flux.py @ 58eb52c, with `FlowMatchEulerDiscreteScheduler`,
//! src/diffusers/schedulers/scheduling_flow_match_euler_discrete.py @ 58eb52c); where the components come
//! from (`components`, read through one `store::ModelStore`) and the whole text-to-image
//! run (`generate`), the same code natively and in the browser's worker.

pub mod components;
pub mod conditioning;
pub mod generate;
pub mod image;
pub mod panels;
pub mod preview;
pub mod sampler;
pub mod schedule;
pub mod seed;
pub mod session;
pub mod step_cache;
pub mod store;
