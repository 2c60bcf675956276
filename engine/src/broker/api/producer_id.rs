//! InitProducerId: producer ids for idempotent producers (`broker::producer_ids`).

use std::rc::Rc;

use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::ProducerId;

use super::super::shard::Shard;
use shardlog_protocol::error_code;

pub async fn init_producer_id(
    shard: &Rc<Shard>,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default();
    if request.transactional_id.is_some() {
        // Transactions are not implemented; idempotence alone needs no transactional id.
        response.error_code = error_code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
        return response;
    }
    if request.producer_id.0 >= 0 {
        // KIP-360: a producer re-initialising keeps its id with a bumped epoch.
        response.producer_id = request.producer_id;
        response.producer_epoch = request.producer_epoch.saturating_add(1);
        return response;
    }
    match shard.shared.allocate_producer_id().await {
        Ok(id) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = 0;
        }
        Err(error) => {
            tracing::error!(%error, "cannot allocate a producer id");
            response.error_code = error_code::KAFKA_STORAGE_ERROR;
        }
    }
    response
}
