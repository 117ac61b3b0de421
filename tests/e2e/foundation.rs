//! The skeleton: every role serves health and reflection, and a real RPC
//! round-trips through Postgres.

use blaze::Role;
use blaze_proto::controlplane::{self as cp, organization_service_client::OrganizationServiceClient};
use blaze_testkit::{TestMesh, authed};
use tokio_stream::StreamExt;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse,
};

const GRPC_ROLES: [Role; 5] = [Role::Identity, Role::ControlPlane, Role::Orchestrator, Role::Execution, Role::Artifacts];

#[tokio::test(flavor = "multi_thread")]
async fn every_role_reports_serving_and_reflects_every_blaze_service() {
    let mesh = TestMesh::start().await;
    for role in GRPC_ROLES {
        let mut health = HealthClient::new(mesh.channel(role));
        // health follows dependency checks; the first check runs at start-up
        let mut status = ServingStatus::Unknown;
        for _ in 0..50 {
            if let Ok(r) = health.check(HealthCheckRequest { service: String::new() }).await {
                status = r.into_inner().status();
                if status == ServingStatus::Serving {
                    break;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(status, ServingStatus::Serving, "{} not serving", role.name());

        let mut reflection = ServerReflectionClient::new(mesh.channel(role));
        let request = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
        let mut stream = reflection.server_reflection_info(tokio_stream::once(request)).await.expect("reflection").into_inner();
        let Some(Ok(resp)) = stream.next().await else { panic!("no reflection answer from {}", role.name()) };
        let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else { panic!("unexpected reflection answer") };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for expected in [
            "blaze.identity.v1.IdentityService",
            "blaze.controlplane.v1.OrganizationService",
            "blaze.controlplane.v1.AppService",
            "blaze.orchestrator.v1.ChatStreamService",
            "blaze.execution.v1.PreviewService",
            "blaze.artifacts.v1.RepositoryService",
        ] {
            assert!(names.iter().any(|n| n == expected), "{} does not reflect {expected}: {names:?}", role.name());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_organisation_round_trips_through_postgres() {
    let mesh = TestMesh::start().await;
    let alice = mesh.user("alice").await;
    assert!(!alice.org_id.is_empty(), "first use provisions a personal organisation");
    let mut orgs = OrganizationServiceClient::new(mesh.channel(Role::ControlPlane));

    let created = orgs
        .create_organization(authed(
            cp::CreateOrganizationRequest { name: Some("Acme Labs".into()), slug: Some("acme-labs".into()) },
            &alice.token,
        ))
        .await
        .expect("create")
        .into_inner()
        .data
        .expect("org");
    assert_eq!((created.name.as_str(), created.slug.as_str(), created.role.as_str()), ("Acme Labs", "acme-labs", "owner"));

    // a fresh token carries the new membership
    let alice = mesh.refresh(&alice).await;
    let got = orgs
        .get_organization(authed(cp::GetOrganizationRequest { org_id: "acme-labs".into() }, &alice.token))
        .await
        .expect("get")
        .into_inner()
        .data
        .expect("org");
    assert_eq!(got.id, created.id);

    let listed =
        orgs.list_organizations(authed(cp::ListOrganizationsRequest::default(), &alice.token)).await.expect("list").into_inner().data;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, alice.org_id, "the default organisation comes first");

    // another user can not see it
    let bob = mesh.user("bob").await;
    let err = orgs.get_organization(authed(cp::GetOrganizationRequest { org_id: created.id.clone() }, &bob.token)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    // and nobody without a token
    let err = orgs.list_organizations(cp::ListOrganizationsRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
}
