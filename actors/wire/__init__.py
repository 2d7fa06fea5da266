"""The wire contract: the broker's assets and subjects, the codec and the messages.

Every stream, bucket, subject, consumer and message id is named here, and
every payload goes through the one codec (``docs/wire.md`` describes both).
"""

from ._codec import DEFAULT_LIMITS as DEFAULT_LIMITS
from ._codec import CodecError as CodecError
from ._codec import CodecLimits as CodecLimits
from ._codec import Envelope as Envelope
from ._codec import PayloadTooLargeError as PayloadTooLargeError
from ._codec import decode as decode
from ._codec import encode as encode
from ._fields import MessageError as MessageError
from ._flow import Slot as Slot
from ._flow import SlotHolder as SlotHolder
from ._flow import activity_slot_key as activity_slot_key
from ._flow import admit_msg_id as admit_msg_id
from ._flow import admit_subject as admit_subject
from ._flow import decode_admit as decode_admit
from ._flow import decode_pace as decode_pace
from ._flow import decode_slot as decode_slot
from ._flow import encode_admit as encode_admit
from ._flow import encode_pace as encode_pace
from ._flow import encode_slot as encode_slot
from ._flow import rate_slot_key as rate_slot_key
from ._flow import workflow_slot_key as workflow_slot_key
from ._json import MAX_NUMBER as MAX_NUMBER
from ._json import MAX_PAYLOAD_DEPTH as MAX_PAYLOAD_DEPTH
from ._json import MIN_NUMBER as MIN_NUMBER
from ._json import JsonError as JsonError
from ._json import check_payload as check_payload
from ._json import dumps as dumps
from ._json import loads as loads
from ._messages import ActivityCancel as ActivityCancel
from ._messages import StartMessage as StartMessage
from ._messages import Task as Task
from ._messages import decode_activity_cancel as decode_activity_cancel
from ._messages import decode_cancel as decode_cancel
from ._messages import decode_deadletter as decode_deadletter
from ._messages import decode_definition as decode_definition
from ._messages import decode_history as decode_history
from ._messages import decode_result as decode_result
from ._messages import decode_signal as decode_signal
from ._messages import decode_start as decode_start
from ._messages import decode_task as decode_task
from ._messages import decode_terminate as decode_terminate
from ._messages import decode_timer as decode_timer
from ._messages import encode_activity_cancel as encode_activity_cancel
from ._messages import encode_cancel as encode_cancel
from ._messages import encode_deadletter as encode_deadletter
from ._messages import encode_definition as encode_definition
from ._messages import encode_history as encode_history
from ._messages import encode_history_records as encode_history_records
from ._messages import encode_result as encode_result
from ._messages import encode_signal as encode_signal
from ._messages import encode_start as encode_start
from ._messages import encode_task as encode_task
from ._messages import encode_timer as encode_timer
from ._names import CANCELS_BUCKET as CANCELS_BUCKET
from ._names import DEADLETTER_STREAM as DEADLETTER_STREAM
from ._names import DEFINITIONS_BUCKET as DEFINITIONS_BUCKET
from ._names import EVENT_ADMIT as EVENT_ADMIT
from ._names import EVENT_CANCEL as EVENT_CANCEL
from ._names import EVENT_COMPLETED as EVENT_COMPLETED
from ._names import EVENT_FAILED as EVENT_FAILED
from ._names import EVENT_SIGNAL as EVENT_SIGNAL
from ._names import EVENT_START as EVENT_START
from ._names import EVENT_TERMINATE as EVENT_TERMINATE
from ._names import EVENT_TIMER as EVENT_TIMER
from ._names import EVENTS_STREAM as EVENTS_STREAM
from ._names import EXPIRIES_STREAM as EXPIRIES_STREAM
from ._names import HISTORY_STREAM as HISTORY_STREAM
from ._names import INSTANCE_PREFIX as INSTANCE_PREFIX
from ._names import PARTITIONS_BUCKET as PARTITIONS_BUCKET
from ._names import PRESENCE_BUCKET as PRESENCE_BUCKET
from ._names import PRESENCE_INTERVAL as PRESENCE_INTERVAL
from ._names import PRESENCE_TTL as PRESENCE_TTL
from ._names import RATES_BUCKET as RATES_BUCKET
from ._names import SCHEDULES_BUCKET as SCHEDULES_BUCKET
from ._names import SLOTS_BUCKET as SLOTS_BUCKET
from ._names import START_PREFIX as START_PREFIX
from ._names import STATES_BUCKET as STATES_BUCKET
from ._names import TASKS_STREAM as TASKS_STREAM
from ._names import Layout as Layout
from ._names import activity_cancel_key as activity_cancel_key
from ._names import cancel_subject as cancel_subject
from ._names import deadletter_msg_id as deadletter_msg_id
from ._names import deadletter_subject as deadletter_subject
from ._names import definition_key as definition_key
from ._names import history_msg_id as history_msg_id
from ._names import history_subject as history_subject
from ._names import instance_partition as instance_partition
from ._names import published_subject as published_subject
from ._names import result_msg_id as result_msg_id
from ._names import result_subject as result_subject
from ._names import signal_subject as signal_subject
from ._names import start_msg_id as start_msg_id
from ._names import start_subject as start_subject
from ._names import stored_start_filter as stored_start_filter
from ._names import task_msg_id as task_msg_id
from ._names import task_subject as task_subject
from ._names import terminate_subject as terminate_subject
from ._names import timer_msg_id as timer_msg_id
from ._names import timer_subject as timer_subject
from ._operations import EVENT_PAUSE as EVENT_PAUSE
from ._operations import EVENT_RESUME as EVENT_RESUME
from ._operations import EVENT_RETRY as EVENT_RETRY
from ._operations import OPERATIONS_BUCKET as OPERATIONS_BUCKET
from ._operations import TypePause as TypePause
from ._operations import decode_expire as decode_expire
from ._operations import decode_pause as decode_pause
from ._operations import decode_resume as decode_resume
from ._operations import decode_retry as decode_retry
from ._operations import decode_type_pause as decode_type_pause
from ._operations import encode_expire as encode_expire
from ._operations import encode_pause as encode_pause
from ._operations import encode_resume as encode_resume
from ._operations import encode_retry as encode_retry
from ._operations import encode_type_pause as encode_type_pause
from ._operations import expire_msg_id as expire_msg_id
from ._operations import expire_subject as expire_subject
from ._operations import expired_instance as expired_instance
from ._operations import pause_subject as pause_subject
from ._operations import paused_type as paused_type
from ._operations import resume_subject as resume_subject
from ._operations import retry_subject as retry_subject
from ._operations import type_pause_key as type_pause_key
from ._presence import WorkerPresence as WorkerPresence
from ._presence import decode_presence as decode_presence
from ._presence import encode_presence as encode_presence
from ._presence import presence_key as presence_key
from ._schedules import KIND_SCHEDULE as KIND_SCHEDULE
from ._schedules import decode_schedule as decode_schedule
from ._schedules import encode_schedule as encode_schedule
from ._state import decode_state as decode_state
from ._state import decode_status as decode_status
from ._state import encode_state as encode_state
from ._state import state_to_data as state_to_data

__all__ = [
    "EXPIRIES_STREAM",
    "expire_subject",
    "expire_msg_id",
    "encode_expire",
    "decode_expire",
    "expired_instance",
    "EVENT_PAUSE",
    "EVENT_RESUME",
    "EVENT_RETRY",
    "OPERATIONS_BUCKET",
    "TypePause",
    "decode_pause",
    "decode_resume",
    "decode_retry",
    "decode_type_pause",
    "encode_pause",
    "encode_resume",
    "encode_retry",
    "encode_type_pause",
    "pause_subject",
    "paused_type",
    "resume_subject",
    "retry_subject",
    "type_pause_key",
    "CANCELS_BUCKET",
    "DEFAULT_LIMITS",
    "DEFINITIONS_BUCKET",
    "EVENTS_STREAM",
    "EVENT_ADMIT",
    "EVENT_CANCEL",
    "EVENT_COMPLETED",
    "EVENT_FAILED",
    "EVENT_SIGNAL",
    "EVENT_START",
    "EVENT_TERMINATE",
    "EVENT_TIMER",
    "DEADLETTER_STREAM",
    "HISTORY_STREAM",
    "INSTANCE_PREFIX",
    "MAX_NUMBER",
    "MAX_PAYLOAD_DEPTH",
    "MIN_NUMBER",
    "PARTITIONS_BUCKET",
    "PRESENCE_BUCKET",
    "PRESENCE_INTERVAL",
    "PRESENCE_TTL",
    "WorkerPresence",
    "decode_presence",
    "encode_presence",
    "presence_key",
    "RATES_BUCKET",
    "SLOTS_BUCKET",
    "START_PREFIX",
    "SCHEDULES_BUCKET",
    "STATES_BUCKET",
    "KIND_SCHEDULE",
    "decode_schedule",
    "encode_schedule",
    "TASKS_STREAM",
    "ActivityCancel",
    "CodecError",
    "CodecLimits",
    "Envelope",
    "JsonError",
    "Layout",
    "MessageError",
    "PayloadTooLargeError",
    "Slot",
    "SlotHolder",
    "StartMessage",
    "Task",
    "activity_cancel_key",
    "activity_slot_key",
    "admit_msg_id",
    "admit_subject",
    "cancel_subject",
    "check_payload",
    "deadletter_msg_id",
    "deadletter_subject",
    "decode",
    "decode_activity_cancel",
    "decode_admit",
    "decode_pace",
    "decode_cancel",
    "decode_deadletter",
    "decode_definition",
    "decode_history",
    "decode_result",
    "decode_signal",
    "decode_slot",
    "decode_start",
    "decode_state",
    "decode_status",
    "decode_task",
    "decode_terminate",
    "decode_timer",
    "definition_key",
    "dumps",
    "encode",
    "encode_activity_cancel",
    "encode_admit",
    "encode_pace",
    "encode_cancel",
    "encode_deadletter",
    "encode_definition",
    "encode_history",
    "encode_history_records",
    "encode_result",
    "encode_signal",
    "encode_slot",
    "encode_start",
    "encode_state",
    "encode_task",
    "encode_timer",
    "history_msg_id",
    "history_subject",
    "instance_partition",
    "loads",
    "published_subject",
    "rate_slot_key",
    "result_msg_id",
    "result_subject",
    "signal_subject",
    "start_msg_id",
    "start_subject",
    "stored_start_filter",
    "state_to_data",
    "task_msg_id",
    "task_subject",
    "terminate_subject",
    "timer_msg_id",
    "timer_subject",
    "workflow_slot_key",
]
