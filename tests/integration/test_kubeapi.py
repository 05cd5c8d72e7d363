"""
The test API server behaves like a real one where kmock alone would not.

Each test uses its own namespace (or its own names for cluster objects),
because the server is shared by the whole module.
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import kopf
import kubernetes.client
import kubernetes.config
import pytest
from kubernetes.client.rest import ApiException

from tests.kubeapi import ApiError, KubeApiServer, run_kopf

CP = '/apis/guywire.dev/v1alpha1/namespaces/{ns}/complexitypolicies'
CM = '/api/v1/namespaces/{ns}/configmaps'


@pytest.fixture()
def core(kube_api: KubeApiServer) -> Iterator[kubernetes.client.CoreV1Api]:
    with kube_api.kubernetes_client() as client:
        yield kubernetes.client.CoreV1Api(client)


@pytest.fixture(autouse=True)
def _no_leftover_faults(kube_api: KubeApiServer) -> Iterator[None]:
    yield
    kube_api.clear_faults()


def configmap(name: str, ns: str, **labels: str) -> dict[str, Any]:
    return {'apiVersion': 'v1', 'kind': 'ConfigMap',
            'metadata': {'name': name, 'namespace': ns, 'labels': labels}, 'data': {'k': 'v'}}


def policy(name: str, ns: str, **extra: Any) -> dict[str, Any]:
    return {'apiVersion': 'guywire.dev/v1alpha1', 'kind': 'ComplexityPolicy',
            'metadata': {'name': name, 'namespace': ns}, 'spec': {'maxDepth': 3}, **extra}


async def call(api: KubeApiServer, method: str, path: str, body: Any = None, *,
               content_type: str = 'application/json', **params: str) -> tuple[int, Any, Any]:
    """One raw HTTP request; returns (status, parsed JSON body, headers)."""
    async with aiohttp.ClientSession(api.url) as session:
        data = None if body is None else json.dumps(body)
        async with session.request(method, path, data=data, params=params,
                                   headers={'Content-Type': content_type}) as response:
            return response.status, await response.json(content_type=None), response.headers


async def watch(api: KubeApiServer, path: str, *, until: int | None = None, timeout: float = 5.0,
                started: asyncio.Event | None = None, **params: str) -> list[dict[str, Any]]:
    """
    Read watch events until the stream ends or `until` events have arrived.
    `started` is set once the headers arrive: the server has registered the watch by then.
    """
    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(api.url) as session:
        async with session.get(path, params={'watch': 'true', **params},
                               timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            assert response.status == 200
            if started is not None:
                started.set()
            async for line in response.content:
                if line.strip():
                    events.append(json.loads(line))
                if until is not None and len(events) >= until:
                    break
    return events


# --- discovery, clients and CRUD --------------------------------------------------------------------

def test_discovery_serves_guywire_kinds_with_status(kube_api: KubeApiServer) -> None:
    status, body, _ = asyncio.run(call(kube_api, 'GET', '/apis/guywire.dev/v1alpha1'))
    assert status == 200
    names = {r['name']: r for r in body['resources']}
    assert names['complexitypolicies']['namespaced'] is True
    assert names['clustercomplexitypolicies']['namespaced'] is False
    assert 'complexitypolicies/status' in names
    for group in ('monitoring.coreos.com/v1', 'kopf.dev/v1'):
        assert asyncio.run(call(kube_api, 'GET', f'/apis/{group}'))[0] == 200


def test_kubeconfig_points_to_the_server(kube_api: KubeApiServer) -> None:
    assert kube_api.kubeconfig_path is not None and kube_api.kubeconfig_path.exists()
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kube_api.kubeconfig_path),
                                       client_configuration=configuration)
    assert configuration.host == kube_api.url
    with kubernetes.client.ApiClient(configuration) as client:
        namespaces = kubernetes.client.CoreV1Api(client).list_namespace()
    assert 'default' in {ns.metadata.name for ns in namespaces.items}


def test_create_get_list_patch_delete(kube_api: KubeApiServer, core: kubernetes.client.CoreV1Api) -> None:
    created = core.create_namespaced_config_map('crud', configmap('one', 'crud', app='x'))
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert core.read_namespaced_config_map('one', 'crud').data == {'k': 'v'}
    assert [cm.metadata.name for cm in core.list_namespaced_config_map('crud').items] == ['one']

    patched = core.patch_namespaced_config_map('one', 'crud', {'data': {'k2': 'v2'}})
    assert patched.data == {'k': 'v', 'k2': 'v2'}
    assert kube_api.objects('configmaps', 'crud')[0]['data'] == {'k': 'v', 'k2': 'v2'}

    with pytest.raises(ApiException) as exc:
        core.create_namespaced_config_map('crud', configmap('one', 'crud'))
    assert exc.value.status == 409 and json.loads(exc.value.body)['reason'] == 'AlreadyExists'

    core.delete_namespaced_config_map('one', 'crud')
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_config_map('one', 'crud')
    assert exc.value.status == 404 and json.loads(exc.value.body)['reason'] == 'NotFound'
    assert kube_api.objects('configmaps', 'crud') == []


def test_metadata_is_server_managed(kube_api: KubeApiServer) -> None:
    first = kube_api.create(configmap('meta', 'meta'))
    meta = first['metadata']
    assert meta['generation'] == 1 and meta['resourceVersion'].isdigit()
    patched = kube_api.patch('configmaps', 'meta', {'data': {'k': 'w'}}, 'meta')
    assert int(patched['metadata']['resourceVersion']) > int(meta['resourceVersion'])
    assert patched['metadata']['uid'] == meta['uid']
    assert patched['metadata']['creationTimestamp'] == meta['creationTimestamp']

    # The client cannot rewrite uid or creationTimestamp, and a no-op write changes nothing.
    again = kube_api.patch('configmaps', 'meta', {'metadata': {'uid': 'forged'}, 'data': {'k': 'w'}}, 'meta')
    assert again == patched

    other = kube_api.create(configmap('meta2', 'meta'))
    assert int(other['metadata']['resourceVersion']) > int(again['metadata']['resourceVersion'])


def test_generate_name_stores_every_object(kube_api: KubeApiServer) -> None:
    for _ in range(5):
        kube_api.create({'apiVersion': 'v1', 'kind': 'Event',
                         'metadata': {'generateName': 'kopf-event-', 'namespace': 'gen'},
                         'involvedObject': {'kind': 'Pod', 'name': 'p', 'namespace': 'gen'},
                         'reason': 'Logging', 'type': 'Normal', 'message': 'hello'})
    names = [e['metadata']['name'] for e in kube_api.objects('events', 'gen')]
    assert len(set(names)) == 5 and all(n.startswith('kopf-event-') for n in names)
    assert len(kube_api.events_for('Pod', 'gen', 'p')) == 5
    with pytest.raises(ApiError) as exc:
        kube_api.create({'apiVersion': 'v1', 'kind': 'ConfigMap', 'metadata': {'namespace': 'gen'}})
    assert exc.value.status == 422


async def test_namespaces_dry_run_and_delete_collection(kube_api: KubeApiServer) -> None:
    status, body, _ = await call(kube_api, 'GET', '/api/v1/namespaces/default')
    assert status == 200 and body['status'] == {'phase': 'Active'}  # kmock 0.8 cannot parse this path

    status, body, _ = await call(kube_api, 'POST', CM.format(ns='dry'), configmap('d', 'dry'), dryRun='All')
    assert status == 201 and body['metadata']['name'] == 'd'
    assert kube_api.objects('configmaps', 'dry') == []

    for name, team in (('x', 'a'), ('y', 'a'), ('z', 'b')):
        await kube_api.acreate(configmap(name, 'dry', team=team))
    status, body, _ = await call(kube_api, 'DELETE', CM.format(ns='dry'), labelSelector='team=a')
    assert status == 200 and [i['metadata']['name'] for i in body['items']] == ['x', 'y']
    assert [o['metadata']['name'] for o in await kube_api.aobjects('configmaps', 'dry')] == ['z']

    status, _, _ = await call(kube_api, 'POST', '/apis/metrics.k8s.io/v1beta1/namespaces/dry/pods', {})
    assert status == 405  # the declared verbs are only get and list


def test_strategic_merge_merges_named_lists(kube_api: KubeApiServer) -> None:
    kube_api.create({'apiVersion': 'apps/v1', 'kind': 'Deployment',
                     'metadata': {'name': 'llm', 'namespace': 'smp'},
                     'spec': {'template': {'spec': {'containers': [
                         {'name': 'server', 'image': 'llm:1', 'ports': [{'containerPort': 8000}]},
                         {'name': 'sidecar', 'image': 'proxy:1'}]}}}})
    patched = kube_api.patch('deployments.apps', 'llm',
                             {'spec': {'template': {'spec': {'containers': [{'name': 'server', 'image': 'llm:2'}]}}}},
                             'smp', content_type='application/strategic-merge-patch+json')
    containers = patched['spec']['template']['spec']['containers']
    assert containers == [{'name': 'server', 'image': 'llm:2', 'ports': [{'containerPort': 8000}]},
                          {'name': 'sidecar', 'image': 'proxy:1'}]
    assert patched['metadata']['generation'] == 2


# --- optimistic concurrency, patches, PUT -------------------------------------------------------------

async def test_stale_resource_version_is_a_conflict(kube_api: KubeApiServer) -> None:
    old = await kube_api.acreate(configmap('occ', 'occ'))
    await kube_api.apatch('configmaps', 'occ', {'data': {'k': 'new'}}, 'occ')
    stale = old['metadata']['resourceVersion']
    path = CM.format(ns='occ') + '/occ'

    status, body, _ = await call(kube_api, 'PATCH', path, {'metadata': {'resourceVersion': stale},
                                                            'data': {'k': 'lost'}},
                                 content_type='application/merge-patch+json')
    assert status == 409
    assert body['kind'] == 'Status' and body['reason'] == 'Conflict' and body['code'] == 409
    assert (await kube_api.aget('configmaps', 'occ', 'occ'))['data'] == {'k': 'new'}

    current = (await kube_api.aget('configmaps', 'occ', 'occ'))['metadata']['resourceVersion']
    status, body, _ = await call(kube_api, 'PATCH', path, {'metadata': {'resourceVersion': current},
                                                            'data': {'k': 'won'}},
                                 content_type='application/merge-patch+json')
    assert status == 200 and body['data'] == {'k': 'won'}


async def test_json_patch_test_failure_is_422(kube_api: KubeApiServer) -> None:
    obj = await kube_api.acreate(configmap('jp', 'jp'))
    path = CM.format(ns='jp') + '/jp'
    rv = obj['metadata']['resourceVersion']
    ops = [{'op': 'test', 'path': '/metadata/resourceVersion', 'value': rv},
           {'op': 'add', 'path': '/metadata/finalizers', 'value': ['guywire.dev/cleanup']}]
    status, body, _ = await call(kube_api, 'PATCH', path, ops, content_type='application/json-patch+json')
    assert status == 200 and body['metadata']['finalizers'] == ['guywire.dev/cleanup']

    status, body, _ = await call(kube_api, 'PATCH', path, ops, content_type='application/json-patch+json')
    assert status == 422 and body['reason'] == 'Invalid' and 'resourceVersion' in body['message']

    status, body, _ = await call(kube_api, 'PATCH', path, [{'op': 'frobnicate', 'path': '/x'}],
                                 content_type='application/json-patch+json')
    assert status == 400
    status, _, _ = await call(kube_api, 'PATCH', path, {'data': {}}, content_type='application/json')
    assert status == 415


async def test_put_replaces_with_concurrency_check(kube_api: KubeApiServer) -> None:
    obj = await kube_api.acreate(configmap('put', 'put'))
    path = CM.format(ns='put') + '/put'
    replacement = {**obj, 'data': {'only': 'this'}}
    status, body, _ = await call(kube_api, 'PUT', path, replacement)
    assert status == 200 and body['data'] == {'only': 'this'}
    assert int(body['metadata']['resourceVersion']) > int(obj['metadata']['resourceVersion'])

    status, body, _ = await call(kube_api, 'PUT', path, replacement)  # the old resourceVersion
    assert status == 409 and body['reason'] == 'Conflict'

    status, body, _ = await call(kube_api, 'PUT', path, {'metadata': {'name': 'other'}, 'data': {}})
    assert status == 400
    status, _, _ = await call(kube_api, 'PUT', CM.format(ns='put') + '/missing', configmap('missing', 'put'))
    assert status == 404


async def test_server_side_apply_is_refused_clearly(kube_api: KubeApiServer) -> None:
    await kube_api.acreate(configmap('ssa', 'ssa'))
    status, body, _ = await call(kube_api, 'PATCH', CM.format(ns='ssa') + '/ssa', configmap('ssa', 'ssa'),
                                 content_type='application/apply-patch+yaml', fieldManager='me')
    assert status == 415 and 'server-side apply' in body['message']


async def test_strategic_merge_is_refused_for_custom_resources(kube_api: KubeApiServer) -> None:
    await kube_api.acreate(policy('smp', 'smp'))
    status, _, _ = await call(kube_api, 'PATCH', CP.format(ns='smp') + '/smp', {'spec': {'maxDepth': 4}},
                              content_type='application/strategic-merge-patch+json')
    assert status == 415


# --- status subresource and generation ----------------------------------------------------------------

async def test_status_is_separate_and_generation_counts_spec_changes(kube_api: KubeApiServer) -> None:
    path = CP.format(ns='st')
    status, body, _ = await call(kube_api, 'POST', path, policy('p', 'st', status={'ready': True}))
    assert status == 201 and 'status' not in body and body['metadata']['generation'] == 1

    status, body, _ = await call(kube_api, 'PATCH', path + '/p',
                                 {'spec': {'maxDepth': 5}, 'status': {'ready': True}},
                                 content_type='application/merge-patch+json')
    assert status == 200 and body['spec'] == {'maxDepth': 5}
    assert 'status' not in body and body['metadata']['generation'] == 2

    status, body, _ = await call(kube_api, 'PATCH', path + '/p/status',
                                 {'spec': {'maxDepth': 9}, 'status': {'ready': True}},
                                 content_type='application/merge-patch+json')
    assert status == 200 and body['status'] == {'ready': True}
    assert body['spec'] == {'maxDepth': 5} and body['metadata']['generation'] == 2

    status, body, _ = await call(kube_api, 'PATCH', path + '/p', {'metadata': {'labels': {'a': 'b'}}},
                                 content_type='application/merge-patch+json')
    assert body['metadata']['generation'] == 2 and body['status'] == {'ready': True}

    status, body, _ = await call(kube_api, 'PUT', path + '/p/status', {**body, 'status': {'ready': False}})
    assert status == 200 and body['status'] == {'ready': False} and body['metadata']['generation'] == 2

    status, _, _ = await call(kube_api, 'PATCH', CM.format(ns='st') + '/x/status', {},
                              content_type='application/merge-patch+json')
    assert status == 404  # configmaps have no status subresource


def test_create_helper_writes_status_through_the_subresource(kube_api: KubeApiServer) -> None:
    created = kube_api.create(policy('helper', 'st2', status={'ready': True}))
    assert created['status'] == {'ready': True} and created['metadata']['generation'] == 1


def test_finalizers_hold_deletion_until_removed(kube_api: KubeApiServer) -> None:
    obj = configmap('fin', 'fin')
    obj['metadata']['finalizers'] = ['guywire.dev/cleanup']
    kube_api.create(obj)
    deleting = kube_api.delete('configmaps', 'fin', 'fin')
    assert deleting['metadata']['deletionTimestamp']
    with pytest.raises(ApiError) as exc:
        kube_api.patch('configmaps', 'fin', {'metadata': {'finalizers': ['a', 'guywire.dev/cleanup']}}, 'fin')
    assert exc.value.status == 422
    kube_api.patch('configmaps', 'fin', {'metadata': {'finalizers': None}}, 'fin')
    assert kube_api.get('configmaps', 'fin', 'fin') is None


# --- selectors -----------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def labelled(kube_api: KubeApiServer) -> None:
    kube_api.create(configmap('a', 'sel', app='web', tier='front'))
    kube_api.create(configmap('b', 'sel', app='web', tier='back'))
    kube_api.create(configmap('c', 'sel', app='db'))
    kube_api.create(configmap('d', 'sel'))


@pytest.mark.parametrize('selector, names', [
    ('app=web', 'ab'), ('app==web', 'ab'), ('app!=web', 'cd'), ('app in (web, db)', 'abc'),
    ('app notin (web)', 'cd'), ('tier', 'ab'), ('!tier', 'cd'), ('app=web,tier=back', 'b'),
])
async def test_label_selectors(kube_api: KubeApiServer, labelled: None, selector: str, names: str) -> None:
    status, body, _ = await call(kube_api, 'GET', CM.format(ns='sel'), labelSelector=selector)
    assert status == 200
    assert ''.join(item['metadata']['name'] for item in body['items']) == names


async def test_field_selectors(kube_api: KubeApiServer, labelled: None) -> None:
    status, body, _ = await call(kube_api, 'GET', '/api/v1/configmaps', fieldSelector='metadata.name=c')
    assert [(i['metadata']['namespace'], i['metadata']['name']) for i in body['items']] == [('sel', 'c')]
    status, body, _ = await call(kube_api, 'GET', CM.format(ns='sel'), fieldSelector='metadata.name!=c')
    assert len(body['items']) == 3

    for reason in ('Started', 'Failed'):
        await kube_api.acreate({'apiVersion': 'v1', 'kind': 'Event',
                                'metadata': {'generateName': 'e-', 'namespace': 'sel'},
                                'involvedObject': {'kind': 'Deployment', 'name': 'llm', 'namespace': 'sel'},
                                'reason': reason, 'type': 'Warning' if reason == 'Failed' else 'Normal'})
    status, body, _ = await call(kube_api, 'GET', '/api/v1/namespaces/sel/events',
                                 fieldSelector='involvedObject.kind=Deployment,involvedObject.name=llm,type=Warning')
    assert [e['reason'] for e in body['items']] == ['Failed']

    status, body, _ = await call(kube_api, 'GET', CM.format(ns='sel'), fieldSelector='data.k=v')
    assert status == 400 and 'field label not supported' in body['message']
    status, _, _ = await call(kube_api, 'GET', CM.format(ns='sel'), labelSelector='app in web')
    assert status == 400


# --- watches ---------------------------------------------------------------------------------------------

async def test_watch_streams_changes_with_versions_and_bookmarks(kube_api: KubeApiServer) -> None:
    await kube_api.acreate(configmap('w0', 'watch'))
    started = asyncio.Event()
    stream = asyncio.create_task(watch(kube_api, CM.format(ns='watch'), timeoutSeconds='2',
                                       allowWatchBookmarks='true', started=started))
    await started.wait()
    created = await kube_api.acreate(configmap('w1', 'watch'))
    patched = await kube_api.apatch('configmaps', 'w1', {'data': {'k': 'x'}}, 'watch')
    await kube_api.adelete('configmaps', 'w1', 'watch')
    started = time.monotonic()
    events = await stream
    assert 1.0 < time.monotonic() - started < 4.5  # ended by timeoutSeconds, not by the client

    changes = [(e['type'], e['object']['metadata'].get('name')) for e in events if e['type'] != 'BOOKMARK']
    assert changes == [('ADDED', 'w0'), ('ADDED', 'w1'), ('MODIFIED', 'w1'), ('DELETED', 'w1')]
    versions = [e['object']['metadata']['resourceVersion'] for e in events if e['type'] != 'BOOKMARK']
    assert versions[1:3] == [created['metadata']['resourceVersion'], patched['metadata']['resourceVersion']]
    assert int(versions[3]) > int(versions[2])
    bookmarks = [e for e in events if e['type'] == 'BOOKMARK']
    assert bookmarks and bookmarks[-1]['object']['kind'] == 'ConfigMap'
    assert int(bookmarks[-1]['object']['metadata']['resourceVersion']) >= int(versions[3])


async def test_watch_resumes_from_a_resource_version(kube_api: KubeApiServer) -> None:
    first = await kube_api.acreate(configmap('r1', 'resume'))
    await kube_api.acreate(configmap('r2', 'resume'))
    await kube_api.apatch('configmaps', 'r1', {'data': {'k': 'y'}}, 'resume')
    events = await watch(kube_api, CM.format(ns='resume'), until=2,
                         resourceVersion=first['metadata']['resourceVersion'])
    assert [(e['type'], e['object']['metadata']['name']) for e in events] == [('ADDED', 'r2'), ('MODIFIED', 'r1')]


async def test_watch_sees_objects_enter_and_leave_a_selector(kube_api: KubeApiServer) -> None:
    await kube_api.acreate(configmap('s1', 'wsel', team='a'))
    started = asyncio.Event()
    stream = asyncio.create_task(watch(kube_api, CM.format(ns='wsel'), until=3, labelSelector='team=a',
                                       started=started))
    await started.wait()
    await kube_api.apatch('configmaps', 's1', {'metadata': {'labels': {'team': 'b'}}}, 'wsel')
    await kube_api.apatch('configmaps', 's1', {'metadata': {'labels': {'team': 'a'}}}, 'wsel')
    events = await stream
    assert [e['type'] for e in events] == ['ADDED', 'DELETED', 'ADDED']


async def test_gone_watch_then_relist(kube_api: KubeApiServer) -> None:
    await kube_api.acreate(configmap('g1', 'gone'))
    status, listing, _ = await call(kube_api, 'GET', CM.format(ns='gone'))
    rv = listing['metadata']['resourceVersion']

    kube_api.expire_watches()
    events = await watch(kube_api, CM.format(ns='gone'), resourceVersion=rv)
    assert [e['type'] for e in events] == ['ERROR'] and events[0]['object']['code'] == 410

    kube_api.compact()  # the history before now is lost; resuming from `rv` is too old
    events = await watch(kube_api, CM.format(ns='gone'), resourceVersion=rv)
    assert events[0]['object']['code'] == 410 and events[0]['object']['reason'] == 'Expired'

    status, listing, _ = await call(kube_api, 'GET', CM.format(ns='gone'))  # the relist
    assert int(listing['metadata']['resourceVersion']) > int(rv)
    started = asyncio.Event()
    stream = asyncio.create_task(watch(kube_api, CM.format(ns='gone'), until=1, started=started,
                                       resourceVersion=listing['metadata']['resourceVersion']))
    await started.wait()
    await kube_api.acreate(configmap('g2', 'gone'))
    assert [e['object']['metadata']['name'] for e in await stream] == ['g2']


async def test_end_watches_closes_open_streams(kube_api: KubeApiServer) -> None:
    started = asyncio.Event()
    stream = asyncio.create_task(watch(kube_api, CM.format(ns='end'), started=started))
    await started.wait()
    assert kube_api.end_watches() >= 1
    assert await asyncio.wait_for(stream, 2) == []
    await kube_api.await_for(lambda: kube_api.open_watches == 0)


# --- fault injection and the request log ----------------------------------------------------------------

def test_injected_failures_are_not_applied(kube_api: KubeApiServer, core: kubernetes.client.CoreV1Api) -> None:
    kube_api.clear_requests()
    kube_api.inject('POST', r'/namespaces/faults/configmaps$', 500)
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_config_map('faults', configmap('f', 'faults'))
    assert exc.value.status == 500 and json.loads(exc.value.body)['kind'] == 'Status'
    assert kube_api.objects('configmaps', 'faults') == []
    core.create_namespaced_config_map('faults', configmap('f', 'faults'))  # only once
    assert kube_api.get('configmaps', 'f', 'faults') is not None

    posts = [r for r in kube_api.requests if r.method == 'POST']
    assert [r.path for r in posts] == ['/api/v1/namespaces/faults/configmaps'] * 2
    assert posts[0].body['metadata']['name'] == 'f' and posts[0].query == {}

    kube_api.inject('PATCH', r'/configmaps/f$', 409, times=2)
    for _ in range(2):
        with pytest.raises(ApiException) as exc:
            core.patch_namespaced_config_map('f', 'faults', {'data': {'x': '1'}})
        assert exc.value.status == 409
    assert core.patch_namespaced_config_map('f', 'faults', {'data': {'x': '1'}}).data['x'] == '1'
    assert kube_api.requests[-1].content_type == 'application/strategic-merge-patch+json'


@pytest.mark.parametrize('status, reason', [(429, 'TooManyRequests'), (503, 'ServiceUnavailable'),
                                            (410, 'Expired'), (500, 'InternalError')])
async def test_injected_status_bodies(kube_api: KubeApiServer, status: int, reason: str) -> None:
    kube_api.inject('GET', r'/namespaces/inj/configmaps$', status, retry_after=3 if status == 503 else None)
    code, body, headers = await call(kube_api, 'GET', CM.format(ns='inj'))
    assert code == status and body['code'] == status and body['reason'] == reason
    if status == 429:
        assert headers['Retry-After'] == '1' and body['details']['retryAfterSeconds'] == 1
    if status == 503:
        assert headers['Retry-After'] == '3'
    assert (await call(kube_api, 'GET', CM.format(ns='inj')))[0] == 200


# --- kopf ------------------------------------------------------------------------------------------------

def test_kopf_operator_runs_against_the_server(kube_api: KubeApiServer) -> None:
    registry = kopf.OperatorRegistry()

    @kopf.on.create('v1', 'configmaps', registry=registry,
                    field='metadata.namespace', value='kopf-test')
    async def configmap_created(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        patch.metadata.annotations['guywire.dev/seen'] = 'yes'
        kopf.info(body, reason='Seen', message='First.')
        kopf.info(body, reason='Seen', message='Second.')

    @kopf.on.create('guywire.dev', 'v1alpha1', 'complexitypolicies', registry=registry,
                    id='complexitypolicy_created')
    async def complexitypolicy_created(**_: Any) -> dict[str, bool]:
        return {'ready': True}

    @kopf.on.delete('guywire.dev', 'v1alpha1', 'complexitypolicies', registry=registry)
    async def complexitypolicy_deleted(**_: Any) -> None:
        pass

    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = 5
    settings.posting.loggers = True  # kopf's own log lines become Events too (generateName)

    def annotation(name: str) -> str | None:
        obj = kube_api.get('configmaps', name, 'kopf-test') or {}
        return obj.get('metadata', {}).get('annotations', {}).get('guywire.dev/seen')

    def seen_events() -> list[str]:
        events = kube_api.events_for('ConfigMap', 'kopf-test', 'cm')
        return [e['message'] for e in events if e['reason'] == 'Seen']

    def lists_of(path: str) -> int:
        return sum(1 for r in kube_api.requests if r.method == 'GET' and r.path == path and not r.watch)

    threads_before = set(threading.enumerate())
    with run_kopf(kube_api, registry, settings=settings):
        # A handler's patch, and Events with generateName.
        kube_api.create(configmap('cm', 'kopf-test'))
        assert kube_api.wait_for(lambda: annotation('cm')) == 'yes'
        kube_api.wait_for(lambda: len(seen_events()) == 2)
        assert seen_events() == ['First.', 'Second.']

        # A finalizer through a JSON patch with a `test` op, results through /status.
        kube_api.create(policy('p', 'kopf-test'))
        done = kube_api.wait_for(lambda: (kube_api.get('complexitypolicies', 'p', 'kopf-test') or {})
                                 .get('status', {}).get('complexitypolicy_created'))
        assert done == {'ready': True}
        stored = kube_api.get('complexitypolicies', 'p', 'kopf-test')
        assert stored['metadata']['finalizers'] and stored['metadata']['generation'] == 1

        # 410 Gone on resuming the watch: kopf lists again and keeps handling.
        lists_before = lists_of('/api/v1/configmaps')
        kube_api.compact()
        kube_api.end_watches()
        kube_api.create(configmap('cm2', 'kopf-test'))
        assert kube_api.wait_for(lambda: annotation('cm2')) == 'yes'
        assert lists_of('/api/v1/configmaps') > lists_before

        # Deletion waits for kopf to run the deletion handler and release the finalizer.
        kube_api.delete('complexitypolicies', 'p', 'kopf-test')
        kube_api.wait_for(lambda: kube_api.get('complexitypolicies', 'p', 'kopf-test') is None)
    assert not (set(threading.enumerate()) - threads_before)

    patches = [r for r in kube_api.requests if r.method == 'PATCH']
    assert {r.content_type for r in patches} >= {'application/merge-patch+json', 'application/json-patch+json'}
    assert any(r.path.endswith('/complexitypolicies/p/status') for r in patches)
    assert any(r.watch and r.query.get('allowWatchBookmarks') == 'true' for r in kube_api.requests)


# --- lifecycle -------------------------------------------------------------------------------------------

def test_server_stops_cleanly_with_open_watches() -> None:
    threads_before = set(threading.enumerate())
    api = KubeApiServer().start()
    port = int(api.url.rsplit(':', 1)[1])

    async def open_watch() -> list[dict[str, Any]]:
        return await watch(api, CM.format(ns='default'), timeout=30)

    results: list[Any] = []
    reader = threading.Thread(target=lambda: results.append(asyncio.run(open_watch())))
    reader.start()
    api.wait_for(lambda: api.open_watches)
    started = time.monotonic()
    api.stop()
    reader.join(5)
    assert time.monotonic() - started < 5 and not reader.is_alive()
    assert not (set(threading.enumerate()) - threads_before)
    with socket.socket() as sock:
        assert sock.connect_ex(('127.0.0.1', port)) != 0


def test_no_internal_errors_happened(kube_api: KubeApiServer) -> None:
    assert kube_api.internal_errors == []
