"""Model families. Each module registers its architectures with :func:`zoo.register_model` on import."""

from zoo.models import edm as edm
from zoo.models import egnn as egnn
from zoo.models import equiformer_v1 as equiformer_v1
from zoo.models import equiformer_v2 as equiformer_v2
from zoo.models import escn as escn
from zoo.models import fa_gnn as fa_gnn
from zoo.models import faenet as faenet
from zoo.models import frame_averaging as frame_averaging
from zoo.models import segno as segno
