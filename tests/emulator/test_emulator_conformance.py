"""The official clients, unchanged, against the emulator: the proof that it is faithful.

DataCrunch: the `verda` SDK (1.25.0). Lambda: `lambda_ai_cloud_api_client`, generated
from Lambda's OpenAPI; its paths include /api/v1, so its base_url is the bare host.
`raise_on_unexpected_status` makes any status the spec does not document an error.
"""

import time

import pytest
from emuhelpers import LAMBDA_KEY, wait_for

verda = pytest.importorskip("verda")
lambda_client = pytest.importorskip("lambda_ai_cloud_api_client")

from lambda_ai_cloud_api_client.api.filesystems import (  # noqa: E402
    create_filesystem,
    filesystem_delete,
    list_filesystems,
)
from lambda_ai_cloud_api_client.api.images import list_images  # noqa: E402
from lambda_ai_cloud_api_client.api.instances import (  # noqa: E402
    get_instance,
    launch_instance,
    list_instance_types,
    list_instances,
    restart_instance,
    terminate_instance,
)
from lambda_ai_cloud_api_client.api.ssh_keys import add_ssh_key, delete_ssh_key, list_ssh_keys  # noqa: E402
from lambda_ai_cloud_api_client.models import (  # noqa: E402
    AddSSHKeyRequest,
    ApiErrorDuplicate,
    ApiErrorFilesystemInUse,
    ApiErrorFileSystemInWrongRegion,
    ApiErrorInsufficientCapacity,
    ApiErrorLaunchResourceNotFound,
    FilesystemCreateRequest,
    GeneratedSSHKey,
    InstanceLaunchRequest,
    InstanceRestartRequest,
    InstanceStatus,
    InstanceTerminateRequest,
)
from verda.exceptions import APIException  # noqa: E402


def verda_client(emu):
    return verda.VerdaClient("emulator-client", "emulator-secret", base_url=emu.datacrunch_url)


def test_verda_sdk_catalog_calls(emu):
    client = verda_client(emu)
    types = client.instance_types.get()
    assert len(types) == 36 and {t.instance_type for t in types} >= {"1B300.30V", "CPU.180V.720G"}
    b300 = next(t for t in types if t.instance_type == "1B300.30V")
    assert (b300.price_per_hour, b300.spot_price_per_hour, b300.currency) == (6.99, 2.447, "usd")
    assert client.instance_types.get(currency="eur")[0].currency == "eur"
    assert [loc["code"] for loc in client.locations.get()] == ["FIN-01", "FIN-02", "FIN-03", "ICE-01"]
    everywhere = client.instances.get_availabilities()
    assert len(everywhere) == 4 and all("availabilities" in loc for loc in everywhere)
    (ice,) = client.instances.get_availabilities(is_spot=True, location_code="ICE-01")
    assert "1B300.30V" in ice["availabilities"]
    assert client.instances.is_available("1B300.30V", location_code="ICE-01") is True
    assert client.instances.is_available("1V100.6V", location_code="ICE-01") is False
    images = client.images.get()
    assert images and {i.image_type for i in client.images.get(instance_type="CPU.4V.16G")} < {
        i.image_type for i in images
    }
    assert client.balance.get().currency == "usd"


def test_verda_sdk_ssh_keys_create_get_delete(emu, keypair):
    client = verda_client(emu)
    public = keypair()[1]
    key = client.ssh_keys.create("k", public)
    assert client.ssh_keys.get_by_id(key.id).public_key == public
    other = client.ssh_keys.create("other", keypair("other")[1])
    assert {k.name for k in client.ssh_keys.get()} == {"k", "other"}
    client.ssh_keys.delete_by_id(key.id)
    client.ssh_keys.delete([other.id])
    assert client.ssh_keys.get() == []


def test_verda_sdk_instance_lifecycle_and_capacity_error(emulator, keypair):
    emu = emulator(
        {
            "extends": "default",
            "lifecycle": {"terminate_delay": 0.1},
            "datacrunch": {"capacity": [{"type": "1B300.30V", "region": "*", "count": 0}]},
        }
    )
    client = verda_client(emu)
    key = client.ssh_keys.create("k", keypair()[1])
    with pytest.raises(APIException) as refused:  # the A6000 refuses the newest default image, as dstack saw
        client.instances.create(
            instance_type="1A6000.10V", image="ubuntu-24.04-cuda-12.8-open-docker", hostname="h", description="d"
        )
    assert refused.value.code == "invalid_request"
    assert refused.value.message == "Operating system is not valid for this instance type"
    inst = client.instances.create(
        instance_type="1V100.6V",
        image="ubuntu-24.04-cuda-12.8-open-docker",
        hostname="train-1",
        description="kcloud",
        ssh_key_ids=[key.id],
        location="FIN-01",
        os_volume={"name": "train-1-os", "size": 100},
        initial_interval=0.05,
    )
    assert inst.status in ("provisioning", "running") and inst.location == "FIN-01"
    running = wait_for(lambda: (i := client.instances.get_by_id(inst.id)).status == "running" and i)
    assert running.ip and running.ssh_key_ids == [key.id]
    assert [i.id for i in client.instances.get(status="running")] == [inst.id]
    client.instances.action(inst.id, "delete")
    wait_for(lambda: client.instances.get() == [])
    with pytest.raises(APIException) as exc:
        client.instances.create(
            instance_type="1B300.30V",
            image="ubuntu-24.04-cuda-12.8-open-docker",
            hostname="h",
            description="d",
            location="FIN-03",
        )
    assert exc.value.code == "service_unavailable" and "Not enough resources" in exc.value.message


def test_verda_sdk_volumes_scripts_and_delete_with_volume_ids(emulator):
    emu = emulator({"extends": "default", "lifecycle": {"terminate_delay": 0.1}})
    client = verda_client(emu)
    script = client.startup_scripts.create("boot", "#!/bin/bash\ntrue\n")
    assert client.startup_scripts.get_by_id(script.id).script == "#!/bin/bash\ntrue\n"
    assert [s.id for s in client.startup_scripts.get()] == [script.id]
    inst = client.instances.create(
        instance_type="CPU.4V.16G",
        image="ubuntu-24.04",
        hostname="vol-test",
        description="kcloud",
        location="FIN-01",
        startup_script_id=script.id,
        initial_interval=0.05,
    )
    wait_for(lambda: client.instances.get_by_id(inst.id).status == "running")
    inst = client.instances.get_by_id(inst.id)
    assert inst.startup_script_id == script.id and inst.os_volume_id
    os_vol = client.volumes.get_by_id(inst.os_volume_id)
    assert os_vol.is_os_volume and os_vol.instance_id == inst.id and os_vol.name == "vol-test-os"
    data = client.volumes.create("NVMe", "data", 50, location="FIN-01")
    assert data.status == "detached" and data.size == 50
    client.volumes.rename(data.id, "renamed")
    client.volumes.increase_size(data.id, 60)
    assert (client.volumes.get_by_id(data.id).name, client.volumes.get_by_id(data.id).size) == ("renamed", 60)
    client.volumes.delete_by_id(data.id)  # is_permanent False: to the trash
    assert [v.id for v in client.volumes.get_in_trash()] == [data.id]
    client.volumes.delete(data.id, is_permanent=True)
    client.instances.action(inst.id, "delete", volume_ids=[inst.os_volume_id], delete_permanently=True)
    wait_for(lambda: client.instances.get() == [])
    assert client.volumes.get() == [] and client.volumes.get_in_trash() == []
    client.startup_scripts.delete_by_id(script.id)
    assert emu.state()["billable"] == {"instances": 0, "volumes": 0, "file_systems": 0, "ssh_keys": 0, "scripts": 0}


def test_verda_sdk_refreshes_an_expired_token(emulator):
    client = verda_client(emulator({"datacrunch": {"credentials": {"token_expires_in": 0.2}}}))
    time.sleep(0.3)
    assert client.locations.get()  # the SDK refreshed (or re-authenticated) before calling


def test_verda_sdk_bad_secret_raises_unauthorized(emu):
    with pytest.raises(APIException) as exc:
        verda.VerdaClient("emulator-client", "wrong", base_url=emu.datacrunch_url)
    assert exc.value.code == "unauthorized_request"


def lambda_api(emu, key=LAMBDA_KEY):
    return lambda_client.AuthenticatedClient(
        base_url=emu.lambdalabs_url.rsplit("/api/v1", 1)[0], token=key, raise_on_unexpected_status=True
    )


def test_lambda_client_parses_every_answer(emulator):
    emu = emulator(
        {"extends": "default", "lambdalabs": {"capacity": [{"type": "gpu_1x_gh200", "region": "*", "count": 0}]}}
    )
    client = lambda_api(emu)
    types = list_instance_types.sync(client=client).data.additional_properties
    assert len(types) == 25 and types["gpu_1x_gh200"].regions_with_capacity_available == []
    assert list_images.sync(client=client).data
    assert list_filesystems.sync(client=client).data == []
    key = add_ssh_key.sync(client=client, body=AddSSHKeyRequest(name="gen")).data
    assert isinstance(key, GeneratedSSHKey) and key.private_key
    assert [k.name for k in list_ssh_keys.sync(client=client).data] == ["gen"]

    def launch(type_name, key_name="gen"):
        body = InstanceLaunchRequest.from_dict(
            {"region_name": "us-east-1", "instance_type_name": type_name, "ssh_key_names": [key_name], "name": "t"}
        )
        return launch_instance.sync(client=client, body=body)

    (iid,) = launch("gpu_1x_a10").data.instance_ids
    assert get_instance.sync(id=iid, client=client).data.status == InstanceStatus.BOOTING
    wait_for(lambda: get_instance.sync(id=iid, client=client).data.status == InstanceStatus.ACTIVE)
    (listed,) = list_instances.sync(client=client).data
    assert listed.ip and listed.region.name == "us-east-1" and listed.actions.terminate.available
    assert isinstance(launch("gpu_1x_gh200").error, ApiErrorInsufficientCapacity)
    assert isinstance(launch("gpu_1x_a10", "missing").error, ApiErrorLaunchResourceNotFound)
    restart = restart_instance.sync(client=client, body=InstanceRestartRequest(instance_ids=[iid]))
    assert restart.data.restarted_instances[0].status == InstanceStatus.BOOTING
    done = terminate_instance.sync(client=client, body=InstanceTerminateRequest(instance_ids=[iid]))
    assert done.data.terminated_instances[0].status == InstanceStatus.TERMINATING
    missing = terminate_instance.sync(client=client, body=InstanceTerminateRequest(instance_ids=["0" * 32]))
    assert missing.error.code == "global/object-does-not-exist"
    assert get_instance.sync(id="0" * 32, client=client).error.code == "global/object-does-not-exist"
    assert delete_ssh_key.sync(id=key.id, client=client).data.to_dict() == {}
    assert delete_ssh_key.sync(id=key.id, client=client).error.code == "global/invalid-parameters"


def test_lambda_client_parses_401(emu):
    answer = list_instances.sync(client=lambda_api(emu, "wrong-key"))
    assert answer.error.code == "global/invalid-api-key"


def test_lambda_client_parses_file_systems_tags_and_their_errors(emu):
    client = lambda_api(emu)
    add_ssh_key.sync(client=client, body=AddSSHKeyRequest(name="gen"))
    fs = create_filesystem.sync(
        client=client, body=FilesystemCreateRequest.from_dict({"name": "shared", "region": "us-east-1"})
    ).data
    assert fs.name == "shared" and fs.is_in_use is False and fs.region.name == "us-east-1"
    dup = create_filesystem.sync(
        client=client, body=FilesystemCreateRequest.from_dict({"name": "shared", "region": "us-east-1"})
    )
    assert isinstance(dup.error, ApiErrorDuplicate)
    (listed,) = list_filesystems.sync(client=client).data
    assert listed.id == fs.id

    def launch(region, **extra):
        body = {"region_name": region, "instance_type_name": "gpu_1x_a10", "ssh_key_names": ["gen"], **extra}
        return launch_instance.sync(client=client, body=InstanceLaunchRequest.from_dict(body))

    assert isinstance(launch("us-west-1", file_system_names=["shared"]).error, ApiErrorFileSystemInWrongRegion)
    tags = [{"key": "run-id", "value": "r-1"}]
    (iid,) = launch("us-east-1", file_system_names=["shared"], tags=tags).data.instance_ids
    inst = get_instance.sync(id=iid, client=client).data
    assert inst.file_system_names == ["shared"] and inst.file_system_mounts[0].file_system_id == fs.id
    assert [t.to_dict() for t in inst.tags] == tags
    assert isinstance(filesystem_delete.sync(id=fs.id, client=client).error, ApiErrorFilesystemInUse)
    terminate_instance.sync(client=client, body=InstanceTerminateRequest(instance_ids=[iid]))
    wait_for(lambda: get_instance.sync(id=iid, client=client).data.status == InstanceStatus.TERMINATED)
    assert filesystem_delete.sync(id=fs.id, client=client).data.deleted_ids == [fs.id]
    assert filesystem_delete.sync(id=fs.id, client=client).error.code == "global/object-does-not-exist"
