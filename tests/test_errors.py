"""vidtx.errors: every error class vidtx raises for a user's mistake is a UserError (one line,
no traceback)."""

from vidtx import cli


def test_vidtx_own_error_classes_are_user_errors():
  from vidtx import locks, outputs, ownership, run_checkpoints
  from vidtx.data import video_decode
  from vidtx.errors import UserError

  for error in (
    locks.LockedError,
    ownership.NotOwnedError,
    ownership.UnwritableError,
    outputs.OverlapError,
    run_checkpoints.DamagedCheckpointError,
    run_checkpoints.CheckpointMismatchError,
    run_checkpoints.WriteError,
    video_decode.VideoError,
  ):
    assert issubclass(error, UserError) and issubclass(error, cli.USER_ERRORS), error
  assert not issubclass(ValueError, cli.USER_ERRORS) and not issubclass(KeyError, cli.USER_ERRORS)
