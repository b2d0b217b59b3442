//! The client API (`cluster`, `submit`): validates requests, calls the head, answers.

use crate::head::{Caller, Head, HeadError, JobUpdate};
use crate::init::{InitError, Provisioner, RunLog};
use crate::model::{ImageRecord, ReservationRecord};
use beowulf_proto::v1::{self, cluster_server::Cluster};
use beowulf_types::{JobId, JobState, NodeName, Timestamp};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::ClientTlsConfig;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status, Streaming};

/// The one place a head error becomes a gRPC status: the head's core knows nothing of the wire.
impl From<HeadError> for Status {
    fn from(e: HeadError) -> Status {
        let message = e.to_string();
        match e {
            HeadError::JobFile(_) => Status::invalid_argument(message),
            HeadError::NoSuchJob(_) | HeadError::NoSuchNode(_) => Status::not_found(message),
            HeadError::PermissionDenied(_) => Status::permission_denied(message),
            HeadError::AlreadyEnded { .. } | HeadError::Conflict(_) => {
                Status::failed_precondition(message)
            }
            HeadError::Store(_) => Status::unavailable(message),
            HeadError::Invalid(_) => Status::invalid_argument(message),
            HeadError::NoSuchImage(_) => Status::not_found(message),
            HeadError::ImageIo(_) | HeadError::Entropy(_) => Status::internal(message),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClusterApi {
    head: Arc<Head>,
    provisioner: Arc<Provisioner>,
    /// The head's identity towards the agents' launch services (mutual TLS), for the job steps
    /// it relays; `None` on a cluster without certificates (plaintext, credential only).
    launch_tls: Option<ClientTlsConfig>,
}

impl ClusterApi {
    pub fn new(
        head: Arc<Head>,
        provisioner: Arc<Provisioner>,
        launch_tls: Option<ClientTlsConfig>,
    ) -> Self {
        ClusterApi {
            head,
            provisioner,
            launch_tls,
        }
    }
}

type StepStream = Pin<Box<dyn Stream<Item = Result<v1::StepEvent, Status>> + Send>>;

type InitStream = Pin<Box<dyn Stream<Item = Result<v1::InitUpdate, Status>> + Send>>;

/// A run's updates as a response stream (the run goes on if the caller goes away).
fn init_stream(log: Arc<RunLog>) -> InitStream {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(log.follow(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

fn init_status(e: InitError) -> Status {
    match e {
        InitError::Busy => Status::already_exists(e.to_string()),
        InitError::NoRun => Status::not_found(e.to_string()),
        InitError::Log { .. } => Status::internal(e.to_string()),
        _ => Status::invalid_argument(e.to_string()),
    }
}

/// The caller's identity: the uid and gid of the unix socket's peer, as the kernel reports them.
fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    let cred = request
        .extensions()
        .get::<UdsConnectInfo>()
        .and_then(|info| info.peer_cred)
        .ok_or_else(|| {
            Status::unauthenticated(
                "cannot identify the caller: connect through headnoded's unix socket",
            )
        })?;
    Ok(Caller {
        uid: cred.uid(),
        gid: cred.gid(),
    })
}

/// Submit, for the gRPC API and the submit socket (`crate::submit_socket`).
pub(crate) async fn submit_as(
    head: Arc<Head>,
    caller: Caller,
    request: v1::SubmitRequest,
) -> Result<v1::SubmitReply, Status> {
    // The commit fsyncs: keep it off the async workers.
    let submitted = tokio::task::spawn_blocking(move || head.submit_jobs(&caller, request))
        .await
        .map_err(|e| Status::internal(format!("submit task failed: {e}")))??;
    Ok(v1::SubmitReply {
        job_id: submitted.first.0,
        count: submitted.count,
        warnings: submitted.warnings,
        test_only: submitted.test_only.unwrap_or_default(),
    })
}

/// A blocking task of the API failed to run to its end (it panicked or the runtime is stopping).
fn task_failed(what: &str) -> impl FnOnce(tokio::task::JoinError) -> Status + '_ {
    move |e| Status::internal(format!("{what} task failed: {e}"))
}

fn image_info(image: ImageRecord) -> v1::ImageInfo {
    v1::ImageInfo {
        name: image.name,
        digest: image.digest,
        size_bytes: image.size_bytes,
        owner: image.owner.name,
        created_ms: image.created.0,
        tar_path: image.tar_path.display().to_string(),
    }
}

fn control_reply(jobs: Vec<JobId>) -> v1::JobControlReply {
    v1::JobControlReply {
        job_ids: jobs.into_iter().map(|j| j.0).collect(),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::JobInfo, Status>> + Send>>;

#[tonic::async_trait]
impl Cluster for ClusterApi {
    async fn submit(
        &self,
        request: Request<v1::SubmitRequest>,
    ) -> Result<Response<v1::SubmitReply>, Status> {
        let caller = caller(&request)?;
        let reply = submit_as(self.head.clone(), caller, request.into_inner()).await?;
        Ok(Response::new(reply))
    }

    async fn cancel(
        &self,
        request: Request<v1::CancelRequest>,
    ) -> Result<Response<v1::CancelReply>, Status> {
        let caller = caller(&request)?;
        let request = request.get_ref();
        let state = self
            .head
            .cancel_jobs(&caller, JobId(request.job_id), request.whole_array)?;
        Ok(Response::new(v1::CancelReply {
            state: state.as_str().to_string(),
        }))
    }

    async fn hold(
        &self,
        request: Request<v1::JobControlRequest>,
    ) -> Result<Response<v1::JobControlReply>, Status> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let held = self
            .head
            .hold(&caller, JobId(r.job_id), r.whole_array, r.user_hold)?;
        Ok(Response::new(control_reply(held)))
    }

    async fn release(
        &self,
        request: Request<v1::JobControlRequest>,
    ) -> Result<Response<v1::JobControlReply>, Status> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let released = self.head.release(&caller, JobId(r.job_id), r.whole_array)?;
        Ok(Response::new(control_reply(released)))
    }

    async fn requeue(
        &self,
        request: Request<v1::JobControlRequest>,
    ) -> Result<Response<v1::JobControlReply>, Status> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let requeued = self.head.requeue(&caller, JobId(r.job_id), r.whole_array)?;
        Ok(Response::new(control_reply(requeued)))
    }

    async fn signal_job(
        &self,
        request: Request<v1::SignalJobRequest>,
    ) -> Result<Response<v1::JobControlReply>, Status> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let signalled = self.head.signal_jobs(
            &caller,
            JobId(r.job_id),
            r.whole_array,
            r.signal,
            r.scope().into(),
        )?;
        Ok(Response::new(control_reply(signalled)))
    }

    async fn update_job(
        &self,
        request: Request<v1::UpdateJobRequest>,
    ) -> Result<Response<v1::JobInfo>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let id = JobId(r.job_id);
        let update = JobUpdate {
            time_limit: r.time_limit_ms,
            partition: r.partition,
            name: r.name,
            nodes: r.num_nodes,
            ntasks: r.num_tasks,
        };
        self.head.update_job(&caller, id, &update)?;
        Ok(Response::new(self.head.show_job(id)?))
    }

    async fn list_jobs(
        &self,
        request: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsReply>, Status> {
        let request = request.get_ref();
        let limit = match request.limit {
            0 => crate::head::DEFAULT_PAGE_JOBS,
            n => (n as usize).min(crate::head::DEFAULT_PAGE_JOBS),
        };
        let (jobs, more) =
            self.head
                .list_jobs_page(request.all, JobId(request.after_job_id), limit);
        Ok(Response::new(v1::ListJobsReply { jobs, more }))
    }

    async fn show_job(
        &self,
        request: Request<v1::ShowJobRequest>,
    ) -> Result<Response<v1::JobInfo>, Status> {
        Ok(Response::new(
            self.head.show_job(JobId(request.get_ref().job_id))?,
        ))
    }

    type WatchJobStream = WatchStream;
    type InitStream = InitStream;
    type WatchInitStream = InitStream;
    type StepStream = StepStream;

    async fn step(
        &self,
        request: Request<Streaming<v1::StepInput>>,
    ) -> Result<Response<StepStream>, Status> {
        let caller = caller(&request)?;
        let mut inputs = request.into_inner();
        let mut start = match inputs.message().await? {
            Some(v1::StepInput {
                body: Some(v1::step_input::Body::Start(start)),
            }) => start,
            _ => {
                return Err(Status::invalid_argument(
                    "a step stream must start with the step's request",
                ));
            }
        };
        let target = self.head.step_target(&caller, JobId(start.job_id))?;
        start.run = target.run.run;
        start.token = target.token;
        start.step_id = 0;
        // For no node in particular: the first node's agent numbers the step and runs it.
        start.node = String::new();
        let mut client = beowulf_proto::launch_client::connect_launch(
            &target.endpoint,
            target.node.as_str(),
            self.launch_tls.as_ref(),
        )
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
        tracing::info!(job = %target.run.job, uid = caller.uid, node = %target.node, "relaying a job step");
        let first = v1::StepInput {
            body: Some(v1::step_input::Body::Start(start)),
        };
        // The caller's later inputs (signals, keys) follow; when its stream ends or breaks
        // (srun gone) so does this one, and the agents kill the step's tasks.
        let rest = inputs.take_while(Result::is_ok).filter_map(Result::ok);
        let events = client
            .step(tokio_stream::once(first).chain(rest))
            .await?
            .into_inner();
        Ok(Response::new(Box::pin(events)))
    }

    async fn end_allocation(
        &self,
        request: Request<v1::EndAllocationRequest>,
    ) -> Result<Response<v1::JobControlReply>, Status> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        self.head
            .end_allocation(&caller, JobId(r.job_id), r.exit_code)?;
        Ok(Response::new(v1::JobControlReply {
            job_ids: vec![r.job_id],
        }))
    }

    async fn init(
        &self,
        request: Request<v1::InitRequest>,
    ) -> Result<Response<Self::InitStream>, Status> {
        if !caller(&request)?.is_root() {
            return Err(Status::permission_denied(
                "only root may provision the cluster (cluster init)",
            ));
        }
        let log = self
            .provisioner
            .start(request.get_ref())
            .map_err(init_status)?;
        Ok(Response::new(init_stream(log)))
    }

    async fn watch_init(
        &self,
        _request: Request<v1::WatchInitRequest>,
    ) -> Result<Response<Self::WatchInitStream>, Status> {
        let log = self.provisioner.current().map_err(init_status)?;
        Ok(Response::new(init_stream(log)))
    }

    async fn watch_job(
        &self,
        request: Request<v1::ShowJobRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let id = JobId(request.get_ref().job_id);
        let head = self.head.clone();
        let mut revisions = head.subscribe();
        let first = head.show_job(id)?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut last = first;
            if tx.send(Ok(last.clone())).await.is_err() {
                return;
            }
            loop {
                if JobState::parse(&last.state).is_some_and(JobState::is_terminal) {
                    return;
                }
                if revisions.changed().await.is_err() {
                    return;
                }
                let Ok(now) = head.show_job(id) else { return };
                if now != last {
                    last = now;
                    if tx.send(Ok(last.clone())).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_nodes(
        &self,
        _request: Request<v1::ListNodesRequest>,
    ) -> Result<Response<v1::ListNodesReply>, Status> {
        Ok(Response::new(v1::ListNodesReply {
            nodes: self.head.list_nodes(),
        }))
    }

    async fn list_partitions(
        &self,
        _request: Request<v1::ListPartitionsRequest>,
    ) -> Result<Response<v1::ListPartitionsReply>, Status> {
        Ok(Response::new(v1::ListPartitionsReply {
            partitions: self.head.list_partitions(),
        }))
    }

    async fn drain(
        &self,
        request: Request<v1::DrainRequest>,
    ) -> Result<Response<v1::NodeInfo>, Status> {
        let caller = caller(&request)?;
        let node = NodeName::new(request.get_ref().node.clone());
        self.head.drain(&caller, &node, &request.get_ref().reason)?;
        Ok(Response::new(self.head.node_info(&node)?))
    }

    async fn why(
        &self,
        request: Request<v1::ShowJobRequest>,
    ) -> Result<Response<v1::WhyReply>, Status> {
        let id = JobId(request.get_ref().job_id);
        let state = self.head.show_job(id)?.state;
        let explanation = self.head.why(id)?;
        let text = explanation.to_string();
        Ok(Response::new(v1::WhyReply {
            job_id: id.0,
            state,
            reason: explanation
                .reason
                .map(|r| r.as_str().to_string())
                .unwrap_or_default(),
            starts_now: explanation.starts_now,
            priority: explanation.priority,
            estimated_start_ms: explanation.estimated_start.map(|t| t.0),
            blockers: text
                .lines()
                .filter(|l| l.starts_with("  "))
                .map(|l| l.trim().to_string())
                .collect(),
            text,
        }))
    }

    async fn get_priority_weights(
        &self,
        _request: Request<v1::PriorityWeightsRequest>,
    ) -> Result<Response<v1::PriorityWeights>, Status> {
        let priority = &self.head.config.priority;
        Ok(Response::new(v1::PriorityWeights {
            age: priority.age_weight,
            max_age_ms: priority.max_age_ms,
            size: priority.size_weight,
            fairshare: priority.fairshare_weight,
            partition: priority.partition_weight,
            qos: priority.qos_weight,
            fairshare_half_life_ms: priority.fairshare_half_life_ms,
            factor_scale: beowulf_scheduler::priority::FACTOR_SCALE,
        }))
    }

    async fn list_shares(
        &self,
        _request: Request<v1::ListSharesRequest>,
    ) -> Result<Response<v1::ListSharesReply>, Status> {
        // Usage is summed over every job record: keep it off the async workers.
        let head = self.head.clone();
        let table = tokio::task::spawn_blocking(move || head.shares())
            .await
            .map_err(task_failed("shares"))?;
        let lines = |level: std::collections::BTreeMap<String, beowulf_scheduler::Share>| {
            level
                .into_iter()
                .map(|(name, s)| v1::ShareInfo {
                    name,
                    raw_shares: s.shares,
                    norm_shares: s.norm_shares,
                    usage_cpu_ms: s.usage,
                    effective_usage: s.effective_usage,
                    fairshare: s.factor,
                })
                .collect()
        };
        Ok(Response::new(v1::ListSharesReply {
            users: lines(table.users),
            accounts: lines(table.accounts),
            weighted: self.head.config.priority.fairshare_weight > 0,
        }))
    }

    async fn create_reservation(
        &self,
        request: Request<v1::Reservation>,
    ) -> Result<Response<v1::Reservation>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let record = ReservationRecord {
            name: r.name.clone(),
            nodes: r.nodes.iter().map(|n| NodeName::new(n.clone())).collect(),
            all_nodes: r.nodes.is_empty(),
            start: Timestamp(r.start_ms),
            end: Timestamp(r.end_ms),
            users: r.users.clone(),
            maintenance: r.maintenance,
            created_by: caller.uid.to_string(),
        };
        self.head.create_reservation(&caller, record)?;
        Ok(Response::new(r))
    }

    async fn delete_reservation(
        &self,
        request: Request<v1::DeleteReservationRequest>,
    ) -> Result<Response<v1::DeleteReservationReply>, Status> {
        let caller = caller(&request)?;
        self.head
            .delete_reservation(&caller, &request.get_ref().name)?;
        Ok(Response::new(v1::DeleteReservationReply {}))
    }

    async fn list_reservations(
        &self,
        _request: Request<v1::ListReservationsRequest>,
    ) -> Result<Response<v1::ListReservationsReply>, Status> {
        let reservations = self
            .head
            .list_reservations()
            .into_iter()
            .map(|r| v1::Reservation {
                name: r.name,
                nodes: r.nodes.into_iter().map(|n| n.0).collect(),
                start_ms: r.start.0,
                end_ms: r.end.0,
                users: r.users,
                maintenance: r.maintenance,
                created_by: r.created_by,
            })
            .collect();
        Ok(Response::new(v1::ListReservationsReply { reservations }))
    }

    async fn import_image(
        &self,
        request: Request<Streaming<v1::ImageChunk>>,
    ) -> Result<Response<v1::ImageInfo>, Status> {
        let caller = caller(&request)?;
        let mut chunks = request.into_inner();
        let first = chunks.message().await?.ok_or_else(|| {
            Status::invalid_argument("an image import sends the image's name first, then its tar")
        })?;
        // Refuse a bad name or someone else's image before the tar is sent.
        let head = self.head.clone();
        let (who, name) = (caller.clone(), first.name);
        let mut upload = tokio::task::spawn_blocking(move || head.begin_import(&who, &name))
            .await
            .map_err(task_failed("import"))??;
        // Writing and hashing run in a blocking task fed by a short queue.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        let writer = tokio::task::spawn_blocking(move || {
            upload.write(&first.data)?;
            while let Some(data) = rx.blocking_recv() {
                upload.write(&data)?;
            }
            Ok::<_, HeadError>(upload)
        });
        let mut received = Ok(());
        loop {
            match chunks.message().await {
                Ok(Some(chunk)) if !chunk.name.is_empty() => {
                    received = Err(Status::invalid_argument(
                        "an image import names the image in its first chunk only",
                    ));
                    break;
                }
                Ok(Some(chunk)) => {
                    if tx.send(chunk.data).await.is_err() {
                        break; // the writer failed: its error is the answer
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    received = Err(status);
                    break;
                }
            }
        }
        drop(tx);
        let upload = writer.await.map_err(task_failed("import"))??;
        // A stream that broke off leaves a partial tar: dropping the upload removes it.
        received?;
        let head = self.head.clone();
        let image = tokio::task::spawn_blocking(move || head.finish_import(&caller, upload))
            .await
            .map_err(task_failed("import"))??;
        tracing::info!(name = %image.name, digest = %image.digest, owner = %image.owner.name, "image imported");
        Ok(Response::new(image_info(image)))
    }

    async fn list_images(
        &self,
        _request: Request<v1::ListImagesRequest>,
    ) -> Result<Response<v1::ListImagesReply>, Status> {
        let images = self
            .head
            .list_images()
            .into_iter()
            .map(image_info)
            .collect();
        Ok(Response::new(v1::ListImagesReply { images }))
    }

    async fn resume(
        &self,
        request: Request<v1::ResumeRequest>,
    ) -> Result<Response<v1::NodeInfo>, Status> {
        let caller = caller(&request)?;
        let node = NodeName::new(request.get_ref().node.clone());
        self.head.resume(&caller, &node)?;
        Ok(Response::new(self.head.node_info(&node)?))
    }
}
