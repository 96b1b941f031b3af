FROM --flag=x debian
