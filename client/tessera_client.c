#include "tessera_client.h"
