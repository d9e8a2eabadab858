//! Generated bus messages and their conversions to `cf-core` types. The
//! conversions are the only place where wire and domain meet.

use cf_core::ditto::Reply;
use cf_core::request::Outcome;
use cf_core::{ApiError, ContainerId, ErrorCode, ThingId};

include!(concat!(env!("OUT_DIR"), "/containerfactory.bus.v1.rs"));

/// A bus message does not describe a valid domain value.
#[derive(Debug, thiserror::Error)]
#[error("malformed bus message: {0}")]
pub struct Malformed(pub String);

impl From<&Reply> for ReplyTo {
    fn from(r: &Reply) -> Self {
        Self {
            thing_id: r.thing.to_string(),
            request_id: r.request_id.clone(),
            command: r.command.clone(),
            ditto_topic: r.ditto_topic.clone(),
            path: r.path.clone(),
            correlation_id: r.correlation_id.clone(),
            response_required: r.response_required,
        }
    }
}

impl TryFrom<ReplyTo> for Reply {
    type Error = Malformed;

    fn try_from(r: ReplyTo) -> Result<Self, Malformed> {
        Ok(Self {
            thing: ThingId::new(&r.thing_id).map_err(Malformed)?,
            request_id: r.request_id,
            command: r.command,
            ditto_topic: r.ditto_topic,
            path: r.path,
            correlation_id: r.correlation_id,
            response_required: r.response_required,
        })
    }
}

impl From<&Outcome> for job_result::Outcome {
    fn from(o: &Outcome) -> Self {
        match o {
            Outcome::Created(id) => Self::ContainerId(id.to_string()),
            Outcome::Failed(e) => Self::Failure(Failure {
                error: e.code.as_str().to_owned(),
                message: e.message.clone(),
            }),
        }
    }
}

impl TryFrom<job_result::Outcome> for Outcome {
    type Error = Malformed;

    fn try_from(o: job_result::Outcome) -> Result<Self, Malformed> {
        match o {
            job_result::Outcome::ContainerId(id) => ContainerId::parse(&id)
                .map(Outcome::Created)
                .map_err(|e| Malformed(e.to_string())),
            job_result::Outcome::Failure(f) => {
                let code = ErrorCode::parse(&f.error)
                    .ok_or_else(|| Malformed(format!("unknown error code {}", f.error)))?;
                Ok(Outcome::Failed(ApiError::new(code, f.message)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_survive_the_wire() {
        let outcomes = [
            Outcome::Created(ContainerId::generate()),
            Outcome::Failed(ApiError::conflict("name x is taken")),
            Outcome::Failed(ApiError::execution("pull failed")),
        ];
        for o in outcomes {
            let wire = job_result::Outcome::from(&o);
            assert_eq!(Outcome::try_from(wire).unwrap(), o);
        }
    }
}
